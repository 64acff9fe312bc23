"""PPO in the online-RL family (config.rl.algo="ppo": genjax/ppo.py, genjax/families/rl_ppo.py).

Known answers: GAE equals a float64 numpy backward loop (gamma = lam = 1: reward-to-go
minus the value); the clipped surrogate's gradient is exactly 0 for a token whose ratio
left [1 - eps, 1 + eps] on the side its advantage pushes, and the unclipped one
elsewhere; the clipped value loss by hand; at a refresh step, with a reference the
policy has left (so the KL term counts), the family's gradient is the per-token policy
gradient -mean_t A_t grad log pi(y_t) with A computed here in float64 (RLOO of the
shaped reward; with a value head: whitened GAE, plus the value head's regression
gradient); at a later step of the same rollout, with the policy moved so that the clip
binds, it is the gradient of the clipped surrogate; a bandit trained by PPO reaches the
KL-regularised optimum softmax(log pi_ref + r / beta); the buffer's tokens are decoded
with the refresh step's key and reused, untouched, by the next E - 1 steps; a PPO
checkpoint with a value head loads, samples and evaluates as an LM and another run's
init_from restores its LM; bad keys are one error line.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from genjax import assemble, config_lib, ppo, preference, sharding, step as step_lib, train
from genjax.checkpoint import Checkpointer
from genjax.data.preferences import encode_pairs
from genjax.errors import ConfigError
from genjax.families import rl, rl_ppo
from genjax.sampling import lm as decoder
from tests.families import run_config, tiny_config, one_error_line
from tests.subproc import run_module
from tests.test_dpo import RECORDS, TOK, moved
from tests.test_rl import logps64, logps_here

PPO = {"rl.algo": "ppo", "rl.ppo_epochs": 3, "rl.beta": 0.1}


def setup(**overrides):
    config = tiny_config("rl", **{**PPO, **overrides})
    model = rl.make_model(config)
    tokens, mask = encode_pairs(RECORDS, TOK, int(config.model.max_len))
    batch = {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}
    variables = nn.meta.unbox(rl.init_variables(model, jax.random.key(0), batch, config))
    state = {k: v for k, v in variables.items() if k != "params"}
    return config, model, batch, variables["params"], state


# ----------------------------------------------------------------------- pure functions
def gae_loop(r, v, m, gamma, lam):
    """GAE per row, float64, walking back over the mask = 1 positions (V = 0 after)."""
    r, v, m = (np.asarray(x, np.float64) for x in (r, v, m))
    out = np.zeros_like(r)
    for i in range(r.shape[0]):
        a_next = v_next = 0.0
        for t in reversed(range(r.shape[1])):
            if not m[i, t]:
                a_next = v_next = 0.0
                continue
            delta = r[i, t] + gamma * v_next - v[i, t]
            out[i, t] = a_next = delta + gamma * lam * a_next
            v_next = v[i, t]
    return out


def random_episodes(seed=0, R=6, L=12):
    rng = np.random.default_rng(seed)
    m = np.zeros((R, L), np.float32)
    for i in range(R - 1):  # one contiguous completion per row; the last row has none
        start = rng.integers(0, L - 2)
        m[i, start:rng.integers(start + 1, L + 1)] = 1.0
    return (rng.normal(size=(R, L)).astype(np.float32),
            rng.normal(size=(R, L)).astype(np.float32), m)


@pytest.mark.parametrize("gamma, lam", [(0.9, 0.8), (1.0, 0.95), (0.99, 0.0)])
def test_gae_equals_a_float64_backward_loop(gamma, lam):
    r, v, m = random_episodes()
    got = ppo.gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(m), gamma, lam)
    np.testing.assert_allclose(np.asarray(got), gae_loop(r, v, m, gamma, lam), atol=2e-5)


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_the_value():
    r, v, m = random_episodes(1)
    got = np.asarray(ppo.gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(m), 1.0, 1.0))
    to_go = np.cumsum((r * m)[:, ::-1], axis=1)[:, ::-1]
    np.testing.assert_allclose(got, (to_go - v) * m, atol=2e-5)


def test_token_rewards_put_the_sequence_reward_on_the_last_completion_token():
    m = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], np.float32)
    logp = np.full((2, 5), -1.0, np.float32)
    ref = np.full((2, 5), -1.5, np.float32)
    got = ppo.token_rewards(jnp.array([2.0, -1.0]), logp, ref, m, beta=0.1)
    want = -0.1 * 0.5 * m
    want[0, 3] += 2.0
    want[1, 4] -= 1.0
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-7)


def test_the_clipped_surrogate_gradient_is_zero_exactly_where_the_clip_binds():
    eps = 0.2
    ratio = np.array([0.5, 0.9, 1.0, 1.1, 1.5] * 2, np.float32)
    adv = np.array([1.0] * 5 + [-1.0] * 5, np.float32)
    logp_old = np.linspace(-3, -1, 10).astype(np.float32)
    logp = logp_old + np.log(ratio)
    mask = np.ones(10, np.float32)
    loss, stats = ppo.policy_loss(logp, logp_old, adv, mask, eps)
    grad = np.asarray(jax.grad(lambda lp: ppo.policy_loss(lp, logp_old, adv, mask, eps)[0])(
        jnp.asarray(logp)))
    binds = ((adv > 0) & (ratio > 1 + eps)) | ((adv < 0) & (ratio < 1 - eps))
    assert binds.sum() == 2
    assert np.all(grad[binds] == 0.0)
    np.testing.assert_allclose(grad[~binds], (-adv * ratio / 10)[~binds], rtol=1e-6)
    assert float(stats["clipfrac"]) == pytest.approx(0.2)
    want = np.maximum(-adv * ratio, -adv * np.clip(ratio, 1 - eps, 1 + eps)).mean()
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(stats["ratio_max"]) == pytest.approx(1.5) and float(stats["ratio_min"]) == 0.5


def test_the_clipped_value_loss_by_hand():
    # V_old = 0, c = 0.2: (V, R) -> max((V - R)^2, (clip(V, -0.2, 0.2) - R)^2)
    v = jnp.array([0.5, 0.1, 0.5, -0.5])
    ret = jnp.array([1.0, 1.0, 0.3, 0.0])
    loss, clipfrac = ppo.value_loss(v, jnp.zeros(4), ret, jnp.ones(4), 0.2)
    assert float(loss) == pytest.approx(0.5 * (0.64 + 0.81 + 0.04 + 0.25) / 4)
    assert float(clipfrac) == 0.25  # only the first: its clipped error 0.64 > 0.25
    grad = jax.grad(lambda v: ppo.value_loss(v, jnp.zeros(4), ret, jnp.ones(4), 0.2)[0])(v)
    np.testing.assert_allclose(np.asarray(grad), [0.0, 0.5 * 2 * (0.1 - 1) / 4,
                                                  0.5 * 2 * 0.2 / 4, 0.5 * 2 * -0.5 / 4],
                               rtol=1e-6)


def test_a_bandit_trained_by_ppo_reaches_the_kl_regularised_optimum():
    """One-token episodes: rewards r over 5 arms, reference pi_ref, beta: the optimum of
    E r - beta KL(pi || pi_ref) is softmax(log pi_ref + r / beta). PPO with 2 epochs per
    batch of 256 samples, RLOO advantages of the k1-shaped reward (the anchor's TV < 1e-3)."""
    r = jnp.array([1.0, 0.0, 0.5, -0.5, 0.8])
    ref_logits = jnp.array([0.5, 1.0, 0.0, 0.2, -1.0])
    beta, K, E, eps = 0.5, 256, 2, 0.2
    log_ref = jax.nn.log_softmax(ref_logits)
    want = jax.nn.softmax(log_ref + r / beta)
    tx = optax.adam(0.02)

    def step(carry, key):
        theta, opt, arms, logp_old, i = carry
        fresh = i % E == 0
        new_arms = jax.random.categorical(key, theta, shape=(K,))
        arms = jnp.where(fresh, new_arms, arms)
        logp_now = jax.nn.log_softmax(theta)[arms]
        logp_old = jnp.where(fresh, logp_now, logp_old)
        shaped = preference.kl_shaped_reward(r[arms], logp_old, log_ref[arms], beta)
        adv = preference.rloo_advantages(shaped[None])[0]

        def loss(th):
            lp = jax.nn.log_softmax(th)[arms]
            return ppo.policy_loss(lp[:, None], logp_old[:, None], adv[:, None],
                                   jnp.ones((K, 1)), eps)[0]
        updates, opt = tx.update(jax.grad(loss)(theta), opt)
        theta = optax.apply_updates(theta, updates)
        return (theta, opt, arms, logp_old, i + 1), jax.nn.softmax(theta)

    theta = ref_logits
    init = (theta, tx.init(theta), jnp.zeros(K, jnp.int32), jnp.zeros(K), 0)
    _, probs = jax.jit(lambda c, k: jax.lax.scan(step, c, k))(
        init, jax.random.split(jax.random.key(0), 1500))
    # at the optimum every arm's shaped reward is beta log Z: the advantages vanish exactly
    tv = 0.5 * float(jnp.abs(probs[-1] - want).sum())
    assert tv < 1e-3, (np.asarray(probs[-1]), np.asarray(want))
    assert 0.5 * float(jnp.abs(jax.nn.softmax(ref_logits) - want).sum()) > 0.2  # it moved


# ----------------------------------------------------------------------- the family's step
def whiten64(x, m):
    mean = (x * m).sum() / m.sum()
    var = (((x - mean) ** 2) * m).sum() / (m.sum() - 1)
    return (x - mean) / np.sqrt(var + 1e-8) * m


@pytest.mark.parametrize("value_head", [False, True])
def test_at_a_refresh_step_the_gradient_is_the_per_token_policy_gradient(value_head):
    config, model, batch, params, state = setup(**{"rl.value_head": value_head,
                                                   "rl.beta": 0.5})
    params = dict(params)
    # a reference the policy has left, so the KL leash is live (beta KL > 0.05 a row below)
    state = {**state, "reference": moved(state["reference"])}
    if value_head:  # a head that predicts something (zero would hide the value gradient)
        V = params["value_head"]["w"].shape[0]
        params["value_head"] = {"w": jax.random.normal(jax.random.key(5), (V,)) * 0.01,
                                "b": jnp.float32(0.3)}

    @jax.jit
    def family_grads(p):
        f = lambda p: rl.loss_fn(p, state, batch, jax.random.key(1), model=model,  # noqa
                                 config=config)
        return jax.value_and_grad(f, has_aux=True)(p)
    (loss, (m, new_state)), grads = family_grads(params)
    buf = jax.device_get(new_state["rollout"])
    assert float(m["refresh"]) == 1.0 and int(buf["age"]) == 1
    seq, mask = jnp.asarray(buf["seq"]), np.asarray(buf["mask"], np.float64)
    lm_params, head = rl_ppo.split(params)
    logp, logits = jax.device_get(logps_here(model, lm_params, seq))
    np.testing.assert_allclose(buf["logp_old"] * mask, logp * mask, atol=1e-5)
    # the advantages, float64, from the rollout's rewards and log-probs
    beta, K = float(config.rl.beta), int(config.rl.samples)
    lp, ref = np.asarray(logp, np.float64), logps64(model, state["reference"], seq)
    np.testing.assert_allclose(buf["ref"] * mask, ref * mask, atol=2e-5)
    assert np.abs(beta * ((lp - ref) * mask).sum(1)).min() > 0.05
    shaped = buf["reward"] - beta * ((lp - ref) * mask).sum(1)
    np.testing.assert_allclose(float(m["kl"]), ((lp - ref) * mask).sum(1).mean(), rtol=1e-4)
    assert float(loss) == pytest.approx(-shaped.mean(), abs=1e-6)
    if not value_head:
        g = shaped.reshape(-1, K)
        adv = ((g - (g.sum(1, keepdims=True) - g) / (K - 1)).reshape(-1, 1)) * mask
    else:
        v = np.einsum("rlv,v->rl", np.asarray(logits, np.float64),
                      np.asarray(head["w"], np.float64)) + float(head["b"])
        tok = -beta * (lp - ref) * mask
        last = np.array([np.nonzero(row)[0][-1] for row in mask])
        tok[np.arange(len(last)), last] += buf["reward"]
        raw = gae_loop(tok, v, mask, float(config.rl.gamma), float(config.rl.lam))
        adv, returns = whiten64(raw, mask), raw + v
    n = mask.sum()
    objective = lambda p: -jnp.sum(jnp.asarray(adv, jnp.float32) * logps_here(  # noqa: E731
        model, p, seq)[0] * jnp.asarray(mask, jnp.float32)) / n
    want = jax.jit(jax.grad(objective))(lm_params)
    got_lm, got_head = rl_ppo.split(grads)
    for a, b in zip(jax.tree_util.tree_leaves(got_lm), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, rtol=2e-4)
    assert max(float(jnp.abs(x).max()) for x in jax.tree_util.tree_leaves(want)) > 1e-4
    if value_head:  # vf_coef * 0.5 mean (V - R)^2 at V = V_old (no clipping): its gradient
        c = float(config.rl.vf_coef) * (v - returns) * mask / n
        np.testing.assert_allclose(float(got_head["b"]), c.sum(), rtol=1e-4)
        np.testing.assert_allclose(np.asarray(got_head["w"]),
                                   np.einsum("rl,rlv->v", c, np.asarray(logits, np.float64)),
                                   rtol=2e-4, atol=1e-6)


def test_after_a_refresh_the_gradient_is_the_clipped_surrogate_of_the_buffer():
    """Step 2 of E = 3, the policy moved so that some ratios leave [1 - eps, 1 + eps]: the
    family's gradient is that of -mean_t min(r A, clip(r, 1 - eps, 1 + eps) A), r = pi /
    pi_old, with pi_old the step-1 policy's log-probs and A the RLOO advantages of the
    step-1 shaped reward (reference moved off the policy), all recomputed here."""
    config, model, batch, params, state = setup(**{"rl.beta": 0.5})
    state = {**state, "reference": moved(state["reference"])}
    step = jax.jit(lambda p, s: jax.value_and_grad(lambda p: rl.loss_fn(
        p, s, batch, jax.random.key(1), model=model, config=config), has_aux=True)(p))
    (_, (_, state)), _ = step(params, state)  # the refresh: step 1's rollout in the buffer
    policy = moved(params, seed=9, scale=0.05)
    (_, (m, _)), grads = step(policy, state)
    buf = jax.device_get(state["rollout"])
    assert float(m["refresh"]) == 0.0
    seq, mask = jnp.asarray(buf["seq"]), np.asarray(buf["mask"], np.float64)
    lp_old = np.asarray(logps_here(model, params, seq)[0], np.float64)
    ref = logps64(model, state["reference"], seq)
    beta, K, eps = float(config.rl.beta), int(config.rl.samples), float(config.rl.clip)
    g = (buf["reward"] - beta * ((lp_old - ref) * mask).sum(1)).reshape(-1, K)
    adv = (g - (g.sum(1, keepdims=True) - g) / (K - 1)).reshape(-1, 1) * mask
    r = np.exp(np.asarray(logps_here(model, policy, seq)[0], np.float64) - lp_old)
    assert ((np.abs(r - 1) > eps) & (mask > 0)).sum() >= 5  # the clip binds somewhere

    def surrogate(p):
        ratio = jnp.exp(logps_here(model, p, seq)[0] - jnp.asarray(lp_old, jnp.float32))
        a = jnp.asarray(adv, jnp.float32)
        per = jnp.minimum(ratio * a, jnp.clip(ratio, 1 - eps, 1 + eps) * a)
        return -jnp.sum(per * jnp.asarray(mask, jnp.float32)) / mask.sum()
    want = jax.jit(jax.grad(surrogate))(policy)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, rtol=2e-4)
    assert float(m["clipfrac"]) > 0


def test_the_buffer_is_decoded_with_the_refresh_steps_key_and_reused_untouched():
    config, model, batch, params, state = setup()  # E = 3
    K, N, T = int(config.rl.samples), int(config.rl.max_new_tokens), int(config.model.max_len)

    @jax.jit
    def one_step(p, s, key):
        f = lambda p: rl.loss_fn(p, s, batch, key, model=model, config=config)  # noqa
        (_, (m, s)), g = jax.value_and_grad(f, has_aux=True)(p)
        return jax.tree_util.tree_map(lambda a, b: a - 0.05 * b, p, g), s, m

    @jax.jit
    def decoded(p, key):
        prompts, lengths = rl.prompts_of(batch, T - N)
        out, _ = decoder.decode_with_logprobs(
            model, p, jnp.repeat(prompts, K, 0), jnp.repeat(lengths, K, 0),
            rng=jax.random.key_data(key), max_new_tokens=N, temperature=1.0)
        return out.tokens_BxN

    bufs, flags = [], []
    for i in range(4):
        before = params
        params, state, m = one_step(params, state, jax.random.key(10 + i))
        bufs.append(jax.device_get(state["rollout"]))
        flags.append(float(m["refresh"]))
        if i in (0, 3):  # a refresh decodes with its own key, on the step's params
            tokens = np.asarray(decoded(before, jax.random.key(10 + i)))
            lengths = bufs[-1]["lengths"]
            for row in range(len(tokens)):
                got = bufs[-1]["seq"][row, lengths[row]:lengths[row] + N]
                np.testing.assert_array_equal(got, tokens[row])
    assert flags == [1.0, 0.0, 0.0, 1.0]
    assert [int(b["age"]) for b in bufs] == [1, 2, 0, 1]
    for b in bufs[1:3]:  # steps 2 and 3: the step-1 rollout, bit for bit
        for k in bufs[0]:
            if k != "age":
                np.testing.assert_array_equal(b[k], bufs[0][k], err_msg=k)
    assert not np.array_equal(bufs[3]["seq"], bufs[0]["seq"])


# ----------------------------------------------------------------------- checkpoints
def test_a_ppo_value_head_run_is_an_lm_for_sampling_evaluation_and_init_from(tiny_run):
    workdir = tiny_run("rl+ppo_value")  # tests/families.py
    proc = run_module("genjax.sample", f"--workdir={workdir}", "--prompt=ROMEO:",
                      "--max_new_tokens=8")
    assert proc.returncode == 0 and "ROMEO:" in proc.stdout, proc.stderr[-2000:]
    proc = run_module("genjax.evaluate", f"--workdir={workdir}", "--only=alignment")
    assert proc.returncode == 0 and "win_rate" in proc.stdout, proc.stderr[-2000:]
    # init_from of a later (RLOO) run: the LM params alone, bit for bit
    ckpt = Checkpointer(str(workdir), read_only=True)
    meta = ckpt.read_meta()
    assert meta["aux_params"] == [rl_ppo.VALUE_HEAD]
    this, later = config_lib.from_saved(meta["config"]), config_lib.from_saved(meta["config"])
    later.rl.algo, later.rl.value_head = "rloo", False
    this, later = (assemble.assemble(c, sharding.make_mesh(c.mesh)) for c in (this, later))
    target = rl.pretrained_target(later.abstract_state)
    got = ckpt.restore_params(None, target, "raw")
    want, head = rl_ppo.split(ckpt.restore(ckpt.latest_step(), this.abstract_state)[0].params)
    assert head is not None
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_init_from_keeps_the_fresh_value_head_and_places_the_lm():
    lm_params = {"w": jnp.ones(3)}
    head = {"w": jnp.full(2, 7.0), "b": jnp.float32(1.0)}
    state = step_lib.init_state({**lm_params, rl_ppo.VALUE_HEAD: head}, {"reference": lm_params},
                                optax.sgd(0.1), jax.random.PRNGKey(0), ema=True)
    src = {"w": jnp.full(3, 2.0)}
    config = tiny_config("rl", **{**PPO, "rl.value_head": True})
    out = rl.load_pretrained(state, src, config)
    for params in (out.params, out.ema_params):
        np.testing.assert_array_equal(params["w"], src["w"])
        np.testing.assert_array_equal(params[rl_ppo.VALUE_HEAD]["w"], head["w"])
    np.testing.assert_array_equal(out.model_state["reference"]["w"], src["w"])
    abstract = jax.eval_shape(lambda: state)
    assert set(rl.pretrained_target(abstract)) == {"w"}
    assert set(rl.merge_params(state.params, {})[0]) == {"w"}
    labels = rl.param_labels(state.params, config)  # the head: its own optimizer group
    assert labels == {"w": "policy", rl_ppo.VALUE_HEAD: {"w": "value", "b": "value"}}
    assert rl.param_labels(lm_params, config) is None


# ----------------------------------------------------------------------- bad input
@pytest.mark.parametrize("overrides, match", [
    ({"rl.algo": "ppo2"}, r"rl.algo='ppo2': choose one of \('rloo', 'ppo'\)"),
    ({"rl.algo": "rloo", "rl.value_head": True}, "rl.value_head=True needs rl.algo='ppo'"),
    ({**PPO, "rl.clip": 0.0}, "rl.clip=0.0: must be > 0"),
    ({**PPO, "rl.ppo_epochs": 0}, "rl.ppo_epochs=0: at least 1"),
    ({**PPO, "rl.lam": 1.5}, "need 0 < gamma <= 1 and 0 <= lam <= 1"),
    ({**PPO, "rl.value_head": True, "rl.vf_coef": 0.0}, "the value head needs both > 0"),
    ({**PPO, "optim.accum_steps": 2}, "accum_steps=1"),
    ({**PPO, "rl.value_head": True, "lora.rank": 4, "optim.ema_decay": 0.0},
     "rl.value_head with LoRA")])
def test_bad_algorithm_keys_are_one_error_line(overrides, match):
    with one_error_line(ConfigError, match=match):
        rl_ppo.settings(tiny_config("rl", **overrides))


def test_a_bad_key_stops_the_run_before_anything_is_written(data_dir, tmp_path):
    config = run_config("rl")
    config.unlock()
    config.rl.algo, config.rl.clip = "ppo", -0.1
    config.lock()
    with pytest.raises(ConfigError, match="rl.clip=-0.1"):
        train.train(config, str(tmp_path / "w"))
    assert not any((tmp_path / "w" / name).exists()
                   for name in ("checkpoints", "config.json", "metrics.jsonl"))


def test_a_huge_log_ratio_off_the_mask_changes_neither_the_loss_nor_its_gradient():
    # exp(95) overflows float32; multiplied by a 0 mask it was NaN, in value and gradient.
    logp = jnp.array([[-1.0, -2.0, -0.5]])
    old, adv, mask = jnp.array([[-1.2, -2.0, -95.5]]), jnp.array([[1.0, -0.5, 3.0]]), \
        jnp.array([[1.0, 1.0, 0.0]])
    loss, stats = ppo.policy_loss(logp, old, adv, mask, 0.2)
    r = np.exp([0.2, 0.0])  # the two real tokens, by hand
    want = np.mean(np.maximum(-np.array([1.0, -0.5]) * r,
                              -np.array([1.0, -0.5]) * np.clip(r, 0.8, 1.2)))
    assert float(loss) == pytest.approx(want, rel=1e-6)
    g = jax.grad(lambda lp: ppo.policy_loss(lp, old, adv, mask, 0.2)[0])(logp)
    assert np.isfinite(np.asarray(g)).all() and float(g[0, 2]) == 0.0
    assert float(stats["approx_kl"]) == pytest.approx(0.5 * 0.2 ** 2 / 2, rel=1e-5)
