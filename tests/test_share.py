"""Share (pytest_sleepy.training.share): one test group per property of SHARE.md.

Synthetic LoRA factors come from seeded torch generators (two modules, 48x40 and
32x40, rank 4, five tasks). Where a model is needed (Phase 2 isolation, the export
through peft, routing) the tiny random Qwen2 of tests/tiny_model.py is used: hidden 64,
4 heads of 16, 2 KV heads, so q/o are 64x64 and k/v 32x64.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from tiny_model import build_tiny_qwen2  # noqa: E402

from pytest_sleepy.training.share import (  # noqa: E402
    ExpandedFactors,
    LoraFactors,
    Phase2Adapter,
    ShareConfig,
    ShareLayer,
    ShareModel,
    apply_delta,
    attach_phase2,
    attach_share,
    average,
    choose_k,
    expanded_from_lora,
    explained_variance,
    export_task,
    load_share,
    merge,
    phase1,
    routed_delta,
    save_share,
    stored_parameter_count,
    trainable_parameter_count,
    write_peft_adapter,
)

SHAPES = {"blocks.0.q": (48, 40), "blocks.0.v": (32, 40)}
N, R = 5, 4
FULL = ShareConfig(k_max=64, tau=1.0, p=R)  # k covers the stack (N r = 20 <= 32)


# -- helpers ------------------------------------------------------------------------------


def random_lora(gen: torch.Generator, d_out: int, d_in: int, r: int = R, alpha: float = 8.0, std: float = 0.1) -> LoraFactors:
    return LoraFactors(torch.randn(d_out, r, generator=gen) * std, torch.randn(r, d_in, generator=gen) * std, alpha, r)


def synthetic(seed: int = 0, n: int = N, shapes: dict = SHAPES, r: int = R) -> dict[str, dict[str, LoraFactors]]:
    gen = torch.Generator().manual_seed(seed)
    return {f"task{i}": {m: random_lora(gen, *shape, r=r) for m, shape in shapes.items()} for i in range(n)}


def rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def projector(basis):
    return basis.double() @ basis.double().T


def random_gauge(gen: torch.Generator, p: int):
    """A well-conditioned G with random signs, and G^-T."""
    G = torch.linalg.qr(torch.randn(p, p, generator=gen, dtype=torch.float64))[0]
    G = G @ torch.diag(torch.rand(p, generator=gen, dtype=torch.float64) * 1.5 + 0.5)
    G = G @ torch.diag(torch.sign(torch.randn(p, generator=gen, dtype=torch.float64)))
    return G, torch.linalg.inv(G).T


def gauged(share: ShareModel, seed: int = 7) -> ShareModel:
    """The same Share model with every task's coefficients in another gauge:
    (eps_beta G, eps_alpha G^-T), G random per task and module (signs included)."""
    gen = torch.Generator().manual_seed(seed)
    layers = {}
    for name, layer in share.layers.items():
        new = ShareLayer(layer.beta.clone(), layer.alpha.clone())
        for task in share.tasks:
            G, G_inv_T = random_gauge(gen, share.config.p)
            new.eps_beta[task] = (layer.eps_beta[task].double() @ G).float()
            new.eps_alpha[task] = (layer.eps_alpha[task].double() @ G_inv_T).float()
        layers[name] = new
    return ShareModel(layers, list(share.tasks), share.config)


def snapshot(share: ShareModel) -> dict[str, torch.Tensor]:
    out = {}
    for name, layer in share.layers.items():
        out[f"{name}.beta"] = layer.beta.clone()
        out[f"{name}.alpha"] = layer.alpha.clone()
        for task in share.tasks:
            out[f"{name}.{task}.eps_beta"] = layer.eps_beta[task].clone()
            out[f"{name}.{task}.eps_alpha"] = layer.eps_alpha[task].clone()
    return out


def same_snapshot(share: ShareModel, before: dict[str, torch.Tensor]) -> bool:
    after = snapshot(share)
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


# -- the tiny model -----------------------------------------------------------------------

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2-share"), seed=0)


def load_tiny(tiny_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tiny_shapes(tiny_dir) -> dict[str, tuple[int, int]]:
    model = load_tiny(tiny_dir)
    return {
        name: tuple(module.weight.shape)
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in ATTENTION
    }


@pytest.fixture(scope="module")
def tiny_adapters(tiny_shapes) -> dict[str, dict[str, LoraFactors]]:
    return synthetic(seed=11, n=3, shapes=tiny_shapes)


@pytest.fixture(scope="module")
def tiny_share(tiny_adapters) -> ShareModel:
    return phase1(tiny_adapters, ShareConfig(k_max=32, tau=1.0, p=R, phi=2))


@pytest.fixture(scope="module")
def input_ids(tiny_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    ids = tokenizer("fn main() { let v = vec![1, 2]; let w = v; println!(\"{:?}\", v); }", add_special_tokens=False)
    return torch.tensor([ids["input_ids"]])


def logits(model, input_ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids).logits


# -- 1. shapes, orthonormal bases, rank(dW) <= p -----------------------------------------


@pytest.mark.parametrize("center", [False, True])
def test_shapes_orthonormal_bases_and_rank_at_most_p(center):
    adapters = synthetic()
    config = ShareConfig(p=2, center=center)  # the defaults: k_max 32, tau 0.6
    share = phase1(adapters, config)
    assert share.tasks == list(adapters) and share.modules == list(SHAPES)
    for name, (d_out, d_in) in SHAPES.items():
        layer = share.layers[name]
        kb, ka = layer.k_beta, layer.k_alpha
        assert layer.beta.shape == (d_out, kb) and layer.alpha.shape == (d_in, ka)
        assert layer.beta.dtype == torch.float32 == layer.alpha.dtype
        torch.testing.assert_close(layer.beta.T @ layer.beta, torch.eye(kb), atol=1e-5, rtol=0)
        torch.testing.assert_close(layer.alpha.T @ layer.alpha, torch.eye(ka), atol=1e-5, rtol=0)
        for task in share.tasks:
            assert layer.eps_beta[task].shape == (kb, 2) and layer.eps_alpha[task].shape == (ka, 2)
            assert layer.B_hat(task).shape == (d_out, 2) and layer.A_hat(task).shape == (2, d_in)
            delta = layer.delta_w(task)
            assert delta.shape == (d_out, d_in)
            assert int(torch.linalg.matrix_rank(delta)) <= 2  # fp32 tolerance: the data is fp32


# -- 2. explained variance, k(tau), k_max ---------------------------------------------------


def test_explained_variance_is_non_decreasing_and_k_is_monotone_in_tau():
    gen = torch.Generator().manual_seed(3)
    spectra = [
        torch.linalg.svdvals(torch.randn(48, 20, generator=gen, dtype=torch.float64)),  # flat-ish
        torch.tensor([10.0, 5.0, 1.0, 0.5, 0.1, 0.0, 0.0], dtype=torch.float64),  # decaying, rank 5
        torch.ones(12, dtype=torch.float64),  # perfectly flat
    ]
    taus = [0.05 * i for i in range(1, 21)]
    for sigma in spectra:
        ev = explained_variance(sigma)
        assert torch.all(ev[1:] >= ev[:-1]) and float(ev[-1]) == 1.0 and float(ev[0]) > 0
        rank = int((sigma > 0).sum())
        ks = [choose_k(sigma, tau, k_max=100) for tau in taus]
        assert ks == sorted(ks) and ks[-1] == rank and all(1 <= k <= rank for k in ks)
        for k_max in (1, 2, 3):
            assert all(choose_k(sigma, tau, k_max) <= k_max for tau in taus)
        # k_EV: the smallest k whose explained variance reaches tau
        for tau in taus:
            k = choose_k(sigma, tau, k_max=100)
            assert float(ev[k - 1]) >= tau - 1e-12 and (k == 1 or float(ev[k - 2]) < tau)
    # flat spectrum: tau 0.6 alone keeps 60 % of the directions -- why k_max exists
    assert choose_k(torch.ones(290, dtype=torch.float64), 0.6, k_max=10**6) == 174
    assert choose_k(torch.ones(290, dtype=torch.float64), 0.6, k_max=32) == 32


@pytest.mark.parametrize("center", [False, True])
def test_phase1_k_is_monotone_in_tau_and_respects_k_max(center):
    adapters = synthetic()
    previous = {name: (0, 0) for name in SHAPES}
    for tau in (0.2, 0.4, 0.6, 0.8, 0.95, 1.0):
        share = phase1(adapters, ShareConfig(k_max=64, tau=tau, center=center))
        for name, layer in share.layers.items():
            assert layer.k_beta >= previous[name][0] and layer.k_alpha >= previous[name][1]
            previous[name] = (layer.k_beta, layer.k_alpha)
    for k_max in (1, 3, 7):
        share = phase1(adapters, ShareConfig(k_max=k_max, tau=1.0, center=center))
        for layer in share.layers.values():
            assert layer.k_beta == k_max and layer.k_alpha == k_max


# -- 3. exact round trip; the plain-centring caveat -----------------------------------------


@pytest.mark.parametrize("center", [False, True], ids=["uncentred", "centred+mean"])
def test_exact_round_trip_at_full_k(center):
    adapters = synthetic()
    share = phase1(adapters, ShareConfig(k_max=64, tau=1.0, p=R, center=center))
    for name in SHAPES:
        assert share.layers[name].k_beta == N * R and share.layers[name].k_alpha == N * R
        for task in adapters:
            assert rel(share.layers[name].delta_w(task), adapters[task][name].delta_w()) < 1e-5


def test_plain_centring_loses_the_mean_direction():
    """Regression test for the caveat: centring, then projecting uncentred adapters,
    misses the mean direction even at full k; the mean-augmented basis does not."""
    adapters = synthetic()
    plain = phase1(adapters, ShareConfig(k_max=64, tau=1.0, p=R, center=True, augment_mean=False))
    for name in SHAPES:
        assert plain.layers[name].k_beta == N * R - 1  # the centred stack lost a dimension
        worst = max(rel(plain.layers[name].delta_w(t), adapters[t][name].delta_w()) for t in adapters)
        assert worst > 1e-2


# -- 4. error non-increasing in k; idempotent re-projection ----------------------------------


@pytest.mark.parametrize("p", [R, 2])
def test_reconstruction_error_is_non_increasing_in_k(p):
    adapters = synthetic()
    errors = []
    for k_max in range(1, N * R + 1):
        share = phase1(adapters, ShareConfig(k_max=k_max, tau=1.0, p=p))
        errors.append(
            sum(
                float((share.layers[m].delta_w(t).double() - adapters[t][m].delta_w().double()).norm() ** 2)
                for t in adapters
                for m in SHAPES
            )
        )
    assert all(later <= earlier * (1 + 1e-6) + 1e-12 for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < errors[0]
    if p == R:  # nothing truncated at the end: the bases hold every adapter
        assert errors[-1] < 1e-9 * errors[0]


@pytest.mark.parametrize("k_max", [6, 64])
def test_reprojecting_a_reconstruction_is_idempotent(k_max):
    share = phase1(synthetic(), ShareConfig(k_max=k_max, tau=0.9, p=2))
    for layer in share.layers.values():
        for task in share.tasks:
            eps_b, eps_a = layer.project(layer.B_hat(task), layer.A_hat(task), 2)
            again = layer.beta @ eps_b @ (layer.alpha @ eps_a).T
            assert rel(again, layer.delta_w(task)) < 1e-5
            torch.testing.assert_close(eps_b, layer.eps_beta[task], atol=1e-5, rtol=1e-4)


# -- 5. the rank-p ingest error is the core's tail ------------------------------------------


@pytest.mark.parametrize("k_max", [64, 8])
def test_rank_p_ingest_error_equals_the_core_tail(k_max):
    adapters = synthetic()
    p = 2
    share = phase1(adapters, ShareConfig(k_max=k_max, tau=1.0, p=p))
    for name in SHAPES:
        layer = share.layers[name]
        beta, alpha = layer.beta.double(), layer.alpha.double()
        for task in adapters:
            delta = adapters[task][name].delta_w().double()
            core = beta.T @ delta @ alpha  # independent of the implementation's path
            tail = math.sqrt(float((torch.linalg.svdvals(core)[p:] ** 2).sum()))
            projected = beta @ core @ alpha.T
            error = float((projected - layer.delta_w(task).double()).norm())
            assert error == pytest.approx(tail, rel=1e-4)
            if k_max == 64:  # the bases hold everything: the whole error is the tail
                assert float((delta - layer.delta_w(task).double()).norm()) == pytest.approx(tail, rel=1e-4)


# -- 6. gauge invariance ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def lossy_share() -> ShareModel:
    """Bases smaller than the stack, so nothing below is trivially lossless."""
    return phase1(synthetic(seed=5), ShareConfig(k_max=10, tau=0.9, p=3, phi=2))


def test_gauge_invariance_of_delta_w_and_export(lossy_share):
    other = gauged(lossy_share)
    for task in lossy_share.tasks:
        for name, layer in lossy_share.layers.items():
            assert rel(other.layers[name].delta_w(task), layer.delta_w(task)) < 1e-5
        mine, theirs = export_task(lossy_share, task), export_task(other, task)
        for name in SHAPES:
            torch.testing.assert_close(theirs[name][0], mine[name][0], atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(theirs[name][1], mine[name][1], atol=2e-5, rtol=1e-4)


def test_gauge_invariance_of_averaging(lossy_share):
    other = gauged(lossy_share)
    mine, theirs = average(lossy_share, 3), average(other, 3)
    for name, layer in lossy_share.layers.items():
        torch.testing.assert_close(theirs[name][0], mine[name][0], atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(theirs[name][1], mine[name][1], atol=2e-5, rtol=1e-4)
        # and it is the best rank-3 approximation of the mean dW
        mean = sum(layer.delta_w(t).double() for t in lossy_share.tasks) / len(lossy_share.tasks)
        U, S, Vh = torch.linalg.svd(mean)
        best = U[:, :3] @ torch.diag(S[:3]) @ Vh[:3]
        assert rel(mine[name][0] @ mine[name][1], best) < 1e-5
    # averaging the coefficients directly is gauge dependent: the wrong thing differs
    name = next(iter(SHAPES))
    naive = [
        sum(s.layers[name].eps_beta[t] for t in s.tasks) @ sum(s.layers[name].eps_alpha[t] for t in s.tasks).T
        for s in (lossy_share, other)
    ]
    assert rel(naive[1], naive[0]) > 1e-2


def _expanded_new_task(share: ShareModel, seed: int, init_std: float = 0.3) -> dict[str, ExpandedFactors]:
    """A Phase-2-like new task: coefficients and expansion vectors at a visible scale."""
    config = ShareConfig(k_max=share.config.k_max, tau=share.config.tau, p=share.config.p, phi=2, init_std=init_std)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, layer in share.layers.items():
        adapter = Phase2Adapter.new_task(layer, config, gen)
        with torch.no_grad():  # the expansion must carry weight, as after training
            adapter.eps_beta_tmp.mul_(30.0)
            adapter.eps_alpha_tmp.mul_(30.0)
        out[name] = adapter.expanded()
    return out


def test_gauge_invariance_of_merge(lossy_share):
    new = _expanded_new_task(lossy_share, seed=1)
    gen = torch.Generator().manual_seed(2)
    regauged = {}
    for name, ex in new.items():
        G, G_inv_T = random_gauge(gen, lossy_share.config.p)
        flips = torch.sign(torch.randn(ex.beta_tmp.shape[1], generator=gen))
        regauged[name] = ExpandedFactors(
            (ex.B.double() @ G).float(), (G_inv_T.T @ ex.A.double()).float(), ex.beta_tmp * flips, ex.alpha_tmp.flip(1)
        )
    mine = merge(lossy_share, "new", new)
    theirs = merge(gauged(lossy_share, seed=9), "new", regauged)
    for name, layer in mine.layers.items():
        assert layer.k_beta < 5 * 3 + 3  # still lossy
        assert rel(projector(theirs.layers[name].beta), projector(layer.beta)) < 1e-4
        assert rel(projector(theirs.layers[name].alpha), projector(layer.alpha)) < 1e-4
        for task in mine.tasks:
            assert rel(theirs.layers[name].delta_w(task), layer.delta_w(task)) < 1e-4


def test_phase1_is_invariant_to_orthogonal_gauges_of_the_inputs():
    """Sign flips and rotations of a LoRA's rank dimension (B O, O^T A) change neither
    the bases (sign convention included) nor the coefficients."""
    adapters = synthetic()
    gen = torch.Generator().manual_seed(4)
    turned = {}
    for task, modules in adapters.items():
        turned[task] = {}
        for name, lora in modules.items():
            O = torch.linalg.qr(torch.randn(R, R, generator=gen, dtype=torch.float64))[0]
            O = O @ torch.diag(torch.sign(torch.randn(R, generator=gen, dtype=torch.float64)))
            turned[task][name] = LoraFactors((lora.B.double() @ O).float(), (O.T @ lora.A.double()).float(), lora.alpha, R)
    config = ShareConfig(k_max=12, tau=0.9, p=2)
    a, b = phase1(adapters, config), phase1(turned, config)
    for name in SHAPES:
        torch.testing.assert_close(b.layers[name].beta, a.layers[name].beta, atol=1e-5, rtol=0)
        torch.testing.assert_close(b.layers[name].alpha, a.layers[name].alpha, atol=1e-5, rtol=0)
        for task in adapters:
            torch.testing.assert_close(b.layers[name].eps_beta[task], a.layers[name].eps_beta[task], atol=1e-5, rtol=1e-4)


# -- 7. Phase 2 isolation -----------------------------------------------------------------------


def training_batch(tiny_dir):
    """One prompt + response; labels -100 on the prompt, so the loss is on the response."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    prompt = "<|im_start|>user\nfix: let x = 5; x = 6;<|im_end|>\n<|im_start|>assistant\n"
    response = "let mut x = 5;\nx = 6;<|im_end|>"
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    input_ids = torch.tensor([p_ids + r_ids])
    labels = torch.tensor([[-100] * len(p_ids) + r_ids])
    assert int((labels != -100).sum()) == len(r_ids) > 0
    return input_ids, labels


def test_phase2_isolation_after_training(tiny_dir, tiny_share):
    model = load_tiny(tiny_dir)
    input_ids, labels = training_batch(tiny_dir)
    weights_before = {k: v.clone() for k, v in model.state_dict().items()}
    flags_before = {n: p.requires_grad for n, p in model.named_parameters()}
    share_before = snapshot(tiny_share)

    handle = attach_phase2(model, tiny_share, "new")
    trainable = handle.parameters()
    optimizer = torch.optim.AdamW(trainable, lr=5e-3, weight_decay=0.01)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in trainable}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}  # everything else frozen
    assert len(held) == len(trainable) == 6 * len(tiny_share.layers)  # 2 eps + expansion (4) per module
    initial = [p.detach().clone() for p in trainable]

    model.train()
    losses = []
    for step in range(4):
        optimizer.zero_grad()
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        if step == 0:
            for name, adapter in handle.adapters.items():
                for pname in ("eps_beta", "eps_alpha", "eps_beta_tmp", "eps_alpha_tmp"):
                    grad = getattr(adapter, pname).grad
                    assert grad is not None and float(grad.abs().max()) > 0, f"{name}.{pname} has no gradient at step 0"
            assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    assert all(math.isfinite(x) for x in losses)
    assert all(not torch.equal(before, after.detach()) for before, after in zip(initial, trainable))

    # while attached: W untouched; the Share model (bases, other tasks' eps) bit-identical
    for name in tiny_share.layers:
        assert torch.equal(model.get_submodule(name).base.weight, weights_before[f"{name}.weight"])
    assert same_snapshot(tiny_share, share_before)

    expanded = handle.expanded()
    handle.detach()
    after = model.state_dict()
    assert after.keys() == weights_before.keys()
    assert all(torch.equal(after[k], weights_before[k]) for k in weights_before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags_before
    assert same_snapshot(tiny_share, share_before)
    for name, ex in expanded.items():
        layer = tiny_share.layers[name]
        assert ex.B.shape == (layer.d_out, R) and ex.A.shape == (R, layer.d_in)
        assert ex.beta_tmp.shape == (layer.d_out, 2) and ex.alpha_tmp.shape == (layer.d_in, 2)


def test_phase2_zero_zero_init_gets_exactly_zero_gradients(tiny_dir, tiny_share):
    model = load_tiny(tiny_dir)
    input_ids, labels = training_batch(tiny_dir)
    with attach_phase2(model, tiny_share, "new", zero_init=True) as handle:
        model(input_ids=input_ids, labels=labels).loss.backward()
        grads = [p.grad for p in handle.parameters()]
        assert grads and all(g is not None and float(g.abs().max()) == 0.0 for g in grads)


def test_phase2_detach_gives_back_the_base_model(tiny_dir, tiny_share, input_ids):
    model = load_tiny(tiny_dir)
    base = logits(model, input_ids)
    handle = attach_phase2(model, tiny_share, "new")
    assert not torch.equal(logits(model, input_ids), base)  # the small random init is active
    handle.detach()
    assert torch.equal(logits(model, input_ids), base)
    assert all(type(model.get_submodule(n)).__name__ == "Linear" for n in tiny_share.layers)


def test_phase2_rejects_an_existing_task_and_double_attachment(tiny_dir, tiny_share):
    model = load_tiny(tiny_dir)
    with pytest.raises(ValueError, match="already in the Share model"):
        attach_phase2(model, tiny_share, tiny_share.tasks[0])
    with attach_phase2(model, tiny_share, "new"):
        with pytest.raises(ValueError, match="already carries"):
            attach_phase2(model, tiny_share, "other")


def test_phase2_warm_start_continues_from_a_previous_task(tiny_dir, tiny_share, input_ids):
    model = load_tiny(tiny_dir)
    task = tiny_share.tasks[0]
    with attach_share(model, tiny_share, task):
        previous = logits(model, input_ids)
    config = ShareConfig(k_max=32, tau=1.0, p=R, phi=0)
    with attach_phase2(model, tiny_share, "new", config, warm_start=task) as handle:
        assert len(handle.parameters()) == 2 * len(tiny_share.layers)  # phi = 0: the two factors only
        assert torch.equal(logits(model, input_ids), previous)


# -- 8. parameter counts ---------------------------------------------------------------------


def test_parameter_count_formula():
    """RoBERTa-base, q and v of its 12 layers (24 modules, 768x768), k = 32, p = 8: the
    12,288 of the spec is the per-task count without expansion (phi = 0), which is also
    what stays stored after the merge, p(k_beta + k_alpha) = 8 * 64 = 512 per module.
    With the default phi = 2 the trainable count would be 24 * 3,616 = 86,784."""
    modules = 12 * 2
    assert modules * trainable_parameter_count(d_in=768, d_out=768, k_beta=32, k_alpha=32, p=8, phi=0) == 12_288
    assert modules * stored_parameter_count(k_beta=32, k_alpha=32, p=8) == 12_288
    assert modules * trainable_parameter_count(768, 768, 32, 32, 8, 2) == 86_784


def test_phase2_trainable_count_matches_the_formula(tiny_dir, tiny_share):
    model = load_tiny(tiny_dir)
    with attach_phase2(model, tiny_share, "new") as handle:
        expected = sum(
            trainable_parameter_count(layer.d_in, layer.d_out, layer.k_beta, layer.k_alpha, R, 2)
            for layer in tiny_share.layers.values()
        )
        assert handle.trainable_parameter_count() == expected
        merged = merge(tiny_share, "new", handle.expanded())
    stored = sum(merged.layers[n].eps_beta["new"].numel() + merged.layers[n].eps_alpha["new"].numel() for n in merged.layers)
    assert stored == sum(stored_parameter_count(l.k_beta, l.k_alpha, R) for l in merged.layers.values())


# -- 9. merges --------------------------------------------------------------------------------


def test_lossless_merge_when_k_covers_the_stack():
    adapters = synthetic(n=4)
    share = phase1(adapters, FULL)
    new = _expanded_new_task(share, seed=3)
    merged = merge(share, "new", new)
    assert merged.tasks == [*adapters, "new"]
    for name, layer in merged.layers.items():
        old = share.layers[name]
        # the new task reaches outside the old bases: its expansion matters
        outside = new[name].B.double() - projector(old.beta) @ new[name].B.double()
        assert float(outside.norm()) > 0.1 * float(new[name].B.norm())
        # the merged basis is exactly the span of every task's B-factors
        stack = torch.cat([old.B_hat(t).double() for t in share.tasks] + [new[name].B.double()], dim=1)
        U, S, _ = torch.linalg.svd(stack, full_matrices=False)
        rank = int((S > S[0] * 1e-6).sum())
        assert layer.k_beta == rank
        assert rel(projector(layer.beta), projector(U[:, :rank])) < 1e-5
        torch.testing.assert_close(layer.beta.T @ layer.beta, torch.eye(layer.k_beta), atol=1e-5, rtol=0)
        for task in share.tasks:
            assert rel(layer.delta_w(task), old.delta_w(task)) < 1e-5
        # the new task keeps its full expanded factors (the official code drops them)
        assert rel(layer.delta_w("new"), new[name].delta_w()) < 1e-5


@pytest.mark.parametrize("order", [(0, 1, 2, 3, 4), (4, 2, 0, 3, 1), (3, 4, 1, 0, 2)])
def test_merging_one_at_a_time_equals_phase1_on_all(order):
    adapters = synthetic()
    everything = phase1(adapters, FULL)
    names = [f"task{i}" for i in order]
    share = phase1({names[0]: adapters[names[0]]}, FULL)
    for task in names[1:]:
        share = merge(share, task, expanded_from_lora(share, adapters[task]))
    assert share.tasks == names
    for name, layer in everything.layers.items():
        assert rel(projector(share.layers[name].beta), projector(layer.beta)) < 1e-5
        assert rel(projector(share.layers[name].alpha), projector(layer.alpha)) < 1e-5
        for task in adapters:
            assert rel(share.layers[name].delta_w(task), layer.delta_w(task)) < 1e-5


# -- 10. export round trip through peft ---------------------------------------------------------


def peft_model(tiny_dir, adapter_dir):
    peft = pytest.importorskip("peft")
    return peft.PeftModel.from_pretrained(load_tiny(tiny_dir), str(adapter_dir)).eval()


def test_export_round_trip_through_peft(tiny_dir, tiny_share, input_ids, tmp_path):
    task = tiny_share.tasks[1]
    out = write_peft_adapter(export_task(tiny_share, task), tmp_path / "export", base_model=str(tiny_dir), rank=R, alpha=R)
    loaded = logits(peft_model(tiny_dir, out), input_ids)

    model = load_tiny(tiny_dir)
    base = logits(model, input_ids)
    with attach_share(model, tiny_share, task):
        share_forward = logits(model, input_ids)
    assert not torch.allclose(share_forward, base, atol=1e-3)  # the adapter is really active
    torch.testing.assert_close(loaded, share_forward, atol=1e-4, rtol=1e-4)


def test_ingest_keeps_the_lora_scale(tiny_dir, tiny_shapes, input_ids, tmp_path):
    """A LoRA with alpha = 32, r = 16 has scale 2; through Share and back (exported with
    lora_alpha = rank, scale 1) it must act exactly like the original."""
    gen = torch.Generator().manual_seed(21)
    original = {name: random_lora(gen, *shape, r=16, alpha=32.0, std=0.05) for name, shape in tiny_shapes.items()}
    assert all(lora.scale == 2.0 for lora in original.values())
    raw_dir = write_peft_adapter(
        {n: (l.B, l.A) for n, l in original.items()}, tmp_path / "raw", base_model=str(tiny_dir), rank=16, alpha=32
    )
    share = phase1({"t": original}, ShareConfig(k_max=32, tau=1.0, p=16))
    exported = export_task(share, "t")
    for name, (B, A) in exported.items():
        assert rel(B @ A, 2.0 * original[name].B @ original[name].A) < 1e-5
    exp_dir = write_peft_adapter(exported, tmp_path / "exp", base_model=str(tiny_dir), rank=16, alpha=16)
    raw_model, exp_model = peft_model(tiny_dir, raw_dir), peft_model(tiny_dir, exp_dir)
    some = next(iter(tiny_shapes))
    assert raw_model.get_submodule(f"base_model.model.{some}").scaling["default"] == 2.0
    assert exp_model.get_submodule(f"base_model.model.{some}").scaling["default"] == 1.0
    torch.testing.assert_close(logits(exp_model, input_ids), logits(raw_model, input_ids), atol=1e-4, rtol=1e-4)


# -- 11. routing -------------------------------------------------------------------------------


def test_no_route_is_the_base_model_bit_identical(tiny_dir, tiny_share, input_ids):
    model = load_tiny(tiny_dir)
    base = logits(model, input_ids)
    deltas = routed_delta(tiny_share, None)
    assert deltas is None
    assert torch.equal(logits(model, input_ids), base)


def test_route_i_matches_task_i_export_and_restores_bit_identically(tiny_dir, tiny_share, input_ids, tmp_path):
    model = load_tiny(tiny_dir)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    base = logits(model, input_ids)
    outputs = {}
    for task in tiny_share.tasks:
        restore = apply_delta(model, routed_delta(tiny_share, task))
        outputs[task] = logits(model, input_ids)
        restore()
        after = model.state_dict()
        assert all(torch.equal(after[k], weights[k]) for k in weights)
        assert torch.equal(logits(model, input_ids), base)
    task = tiny_share.tasks[2]
    out = write_peft_adapter(export_task(tiny_share, task), tmp_path / "export", base_model=str(tiny_dir), rank=R, alpha=R)
    torch.testing.assert_close(outputs[task], logits(peft_model(tiny_dir, out), input_ids), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(outputs[task], base, atol=1e-3)
    assert not torch.allclose(outputs[tiny_share.tasks[0]], outputs[task], atol=1e-3)  # routes differ


def test_averaging_one_task_returns_that_task():
    share = phase1({"only": synthetic(n=1)["task0"]}, ShareConfig(k_max=16, tau=0.9, p=3))
    averaged, exported = average(share, 3), export_task(share, "only")
    for name, layer in share.layers.items():
        torch.testing.assert_close(averaged[name][0], exported[name][0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(averaged[name][1], exported[name][1], atol=1e-6, rtol=1e-5)
        assert rel(averaged[name][0] @ averaged[name][1], layer.delta_w("only")) < 1e-5


def test_apply_delta_restores_low_precision_weights_bit_identically():
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 48)).to(torch.bfloat16)
    original = model[0].weight.detach().clone()
    delta = torch.randn(48, 40, generator=gen) * 1e-3  # mostly below bf16's resolution
    restore = apply_delta(model, {"0": delta})
    assert model[0].weight.dtype == torch.bfloat16 and not torch.equal(model[0].weight, original)
    restore()
    assert torch.equal(model[0].weight, original)  # a copy put back, not a subtraction
    with pytest.raises(ValueError):
        apply_delta(model, {"0": torch.zeros(40, 48)})
    assert torch.equal(model[0].weight, original)


# -- 12. determinism ---------------------------------------------------------------------------


def test_determinism_identical_saved_bases(tmp_path):
    config = ShareConfig(k_max=12, tau=0.8, p=3, center=True)
    first = save_share(phase1(synthetic(seed=8), config), tmp_path / "a")
    second = save_share(phase1(synthetic(seed=8), config), tmp_path / "b")
    for file in ("bases.safetensors", "coefficients.safetensors", "share.json"):
        assert (first / file).read_bytes() == (second / file).read_bytes()
    loaded = load_share(first)
    assert loaded.config == config and loaded.tasks == [f"task{i}" for i in range(N)]
    again = save_share(loaded, tmp_path / "c")
    assert (again / "bases.safetensors").read_bytes() == (first / "bases.safetensors").read_bytes()
    assert (again / "coefficients.safetensors").read_bytes() == (first / "coefficients.safetensors").read_bytes()


def test_phase2_initialisation_is_seeded(tiny_dir, tiny_share):
    def init(seed: int) -> list[torch.Tensor]:
        model = load_tiny(tiny_dir)
        config = ShareConfig(k_max=32, tau=1.0, p=R, phi=2, seed=seed)
        with attach_phase2(model, tiny_share, "new", config) as handle:
            return [p.detach().clone() for p in handle.parameters()]

    a, b, c = init(0), init(0), init(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, y) for x, y in zip(a, c))
    # small and random, both factors: never zero/zero
    assert all(0 < float(x.abs().max()) for x in a)


def test_lora_factors_scale_and_ingest():
    gen = torch.Generator().manual_seed(0)
    B, A = torch.randn(6, 4, generator=gen), torch.randn(4, 5, generator=gen)
    plain, rs = LoraFactors(B, A, alpha=8.0, rank=4), LoraFactors(B, A, alpha=8.0, rank=4, rslora=True)
    assert plain.scale == 2.0 and rs.scale == 4.0
    b, a = plain.ingest()
    assert torch.equal(b, B * 2.0) and torch.equal(a, A) and a is not A
    with pytest.raises(ValueError):
        LoraFactors(B, A, alpha=8.0, rank=3)


# -- Phase 3 at the default configuration (tau applies to Phase 1 only) --------------------


def _zero_task(share: ShareModel) -> dict[str, ExpandedFactors]:
    return {
        name: ExpandedFactors(torch.zeros(layer.d_out, 8), torch.zeros(8, layer.d_in),
                              torch.zeros(layer.d_out, 0), torch.zeros(layer.d_in, 0))
        for name, layer in share.layers.items()
    }


def test_merging_a_zero_task_at_the_default_config_changes_no_old_task():
    share = phase1(synthetic(n=5, r=8), ShareConfig())
    merged = merge(share, "nothing", _zero_task(share))
    for name, layer in merged.layers.items():
        assert (layer.k_beta, layer.k_alpha) == (share.layers[name].k_beta, share.layers[name].k_alpha)
        for task in share.tasks:
            assert rel(layer.delta_w(task), share.layers[name].delta_w(task)) < 1e-5


def test_sequential_merges_at_the_default_config_keep_every_task_when_the_rank_fits():
    adapters = synthetic(n=7, r=8)
    names = list(adapters)
    share = phase1({t: adapters[t] for t in names[:3]}, ShareConfig())
    for task in names[3:]:
        share = merge(share, task, expanded_from_lora(share, adapters[task]))
    reference = phase1({t: adapters[t] for t in names[:3]}, ShareConfig())
    for name, layer in share.layers.items():
        assert layer.k_beta <= share.config.k_max
        for task in names[:3]:  # Phase-1 tasks: exactly their Phase-1 reconstruction
            assert rel(layer.delta_w(task), reference.layers[name].delta_w(task)) < 1e-5
        for task in names[3:]:  # merged tasks: their best rank-p approximation
            full = adapters[task][name].delta_w().double()
            U, S, Vh = torch.linalg.svd(full)
            best = U[:, :R] @ torch.diag(S[:R]) @ Vh[:R]
            assert rel(layer.delta_w(task), best) < 1e-5


def _balanced_tail(delta_ws: list[torch.Tensor], k: int) -> tuple[float, float]:
    """sqrt of the energy beyond k of [F_1 ... F_t] and [G_1 ... G_t], F_i G_i^T = dW_i balanced."""
    tails = []
    for side in (0, 1):
        blocks = []
        for dw in delta_ws:
            U, S, Vh = torch.linalg.svd(dw.double(), full_matrices=False)
            blocks.append((U if side == 0 else Vh.T) * S.sqrt())
        sigma = torch.linalg.svdvals(torch.cat(blocks, dim=1))
        tails.append(float(sigma[k:].square().sum().sqrt()))
    return tails[0], tails[1]


def test_a_merge_over_k_max_loses_at_most_the_documented_bound():
    config = ShareConfig(k_max=6, p=R)
    adapters = synthetic(n=4)
    share = phase1({t: adapters[t] for t in list(adapters)[:2]}, config)
    merged = merge(share, "task2", expanded_from_lora(share, adapters["task2"]))
    for name, layer in merged.layers.items():
        assert layer.k_beta == 6 and layer.k_alpha == 6
        before = [share.layers[name].delta_w(t).double() for t in share.tasks]
        before.append(_rank_p(adapters["task2"][name]))  # a rank-p LoRA: its dW exactly
        tail_beta, tail_alpha = _balanced_tail(before, config.k_max)
        assert tail_beta > 0  # the stack really does not fit
        for task, dw in zip(merged.tasks, before):
            bound = float(torch.linalg.matrix_norm(dw, ord=2).sqrt()) * (tail_beta + tail_alpha)
            assert float((layer.delta_w(task).double() - dw).norm()) <= bound * (1 + 1e-6) + 1e-9


def _rank_p(factors: LoraFactors) -> torch.Tensor:
    U, S, Vh = torch.linalg.svd(factors.delta_w().double())
    return U[:, :R] @ torch.diag(S[:R]) @ Vh[:R]
