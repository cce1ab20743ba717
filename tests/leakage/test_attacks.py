import numpy as np
import pytest
import torch
from torch.nn import functional as F

from leakage.attacks import (
    ATTACK_NAMES,
    FedAvgSpec,
    analytic_first_layer,
    analytic_hidden,
    analytic_unknown_bias,
    client_gradients,
    client_weight_update,
    gradient_from_vector,
    gradient_from_weights,
    infer_label,
    infer_label_counts,
    run_attack,
)
from leakage.data import load_embedded
from leakage.errors import AttackConfigError, ShapeMismatchError, UnknownNameError
from leakage.metrics import psnr, score
from leakage.models import build_model

torch.set_num_threads(1)  # tiny graphs; extra threads only contend with other jobs


@pytest.fixture(scope="module")
def tiny():
    """8x8 crops of the embedded images: small enough for second-order attacks in seconds."""
    return load_embedded(8)


def _case(data, index, model="lenet", seed=0, width=None):
    images, labels = data.images[index:index + 1], data.labels[index:index + 1]
    net = build_model(model, num_classes=10, in_channels=3, image_size=8, seed=seed, width=width)
    return net, images, labels, client_gradients(net, images, labels)


def test_gradient_vector_round_trip_and_length_check():
    net = build_model("lenet", image_size=8, seed=0)
    flat = np.arange(sum(p.numel() for p in net.parameters()), dtype=np.float32)
    parts = gradient_from_vector(net, flat)
    assert [p.shape for p in parts] == [p.shape for p in net.parameters()]
    assert np.array_equal(torch.cat([p.flatten() for p in parts]).numpy(), flat)
    with pytest.raises(ShapeMismatchError, match=f"expected a flat vector of {flat.size}"):
        gradient_from_vector(net, flat[:-1])


def test_one_sgd_step_converts_back_to_the_gradient(tiny):
    net, images, labels, gradient = _case(tiny, 3)
    before, after = client_weight_update(net, images, labels, lr=0.05, local_steps=1)
    for recovered, true in zip(gradient_from_weights(before, after, 0.05), gradient):
        assert torch.allclose(recovered, true, atol=1e-5)
    with pytest.raises(AttackConfigError):
        gradient_from_weights(before, after, 0.0)


@pytest.mark.parametrize("index", [0, 13, 26, 39, 52, 65, 78, 91, 104, 117])
def test_idlg_label_is_exact(tiny, index):
    net, _, labels, gradient = _case(tiny, index)
    assert infer_label(net, gradient) == int(labels[0])


def test_label_count_heuristic_on_a_batch(tiny):
    index = [0, 12, 24, 36]  # four classes
    net = build_model("lenet", image_size=8, seed=0)
    gradient = client_gradients(net, tiny.images[index], tiny.labels[index])
    assert infer_label_counts(net, gradient, 4).tolist() == sorted(tiny.labels[index].tolist())


def test_label_counts_from_a_neutral_image_on_a_batch_of_eight():
    # Eight classes at 32x32, where the model already predicts one of them confidently:
    # the 1/K guess would give that class nothing; the neutral-image estimate finds it.
    data = load_embedded(32)
    index = [12 * c + 11 for c in range(2, 10)]
    net = build_model("lenet", image_size=32, seed=0)
    gradient = client_gradients(net, data.images[index], data.labels[index])
    found = infer_label_counts(net, gradient, 8, input_shape=(3, 32, 32))
    assert found.tolist() == sorted(data.labels[index].tolist())


def test_smoothness_prior_defaults_and_checks(tiny):
    from leakage.attacks.deep_leakage import PRIOR, MatchingProblem, default_prior, solve_matching

    assert default_prior(1, (3, 32, 32)) == 0.0
    assert default_prior(2, (3, 32, 32)) == PRIOR and default_prior(1, (3, 64, 64)) == PRIOR
    net, _, labels, gradient = _case(tiny, 3)
    with pytest.raises(AttackConfigError, match="prior"):
        solve_matching("idlg", net, [MatchingProblem(gradient, labels, 0)], input_shape=(3, 8, 8),
                       num_classes=10, batch_size=1, iterations=1, restarts=1, device="cpu",
                       prior=-1.0)


def test_dlg_recovers_a_tiny_image(tiny):
    net, images, labels, gradient = _case(tiny, 12)
    result = run_attack("dlg", net, gradient, input_shape=(3, 8, 8), num_classes=10,
                        iterations=60, device="cpu", seed=1)
    assert result.images.shape == (1, 3, 8, 8)
    assert float(psnr(result.images, images)[0]) > 30.0
    assert int(result.labels[0]) == int(labels[0])
    assert result.iterations_per_second > 0


def test_idlg_recovers_a_tiny_image(tiny):
    net, images, labels, gradient = _case(tiny, 24)
    result = run_attack("idlg", net, gradient, input_shape=(3, 8, 8), num_classes=10,
                        iterations=60, device="cpu", seed=1)
    assert float(psnr(result.images, images)[0]) > 30.0
    assert result.labels.tolist() == labels.tolist()


def test_dlg_batch_of_two_after_matching(tiny):
    index = [12, 60]
    net = build_model("lenet", image_size=8, seed=0)
    images, labels = tiny.images[index], tiny.labels[index]
    gradient = client_gradients(net, images, labels)
    result = run_attack("idlg", net, gradient, input_shape=(3, 8, 8), num_classes=10,
                        batch_size=2, iterations=100, device="cpu", seed=0)
    scores = score(result.images, result.labels, images, labels)
    assert all(s.label_true == s.label_recovered for s in scores)
    assert min(s.psnr for s in scores) > 20.0


def test_inverting_gradients_recovers_a_tiny_image(tiny):
    net, images, labels, gradient = _case(tiny, 36)
    result = run_attack("ig", net, gradient, input_shape=(3, 8, 8), num_classes=10,
                        iterations=400, restarts=2, device="cpu", seed=0, tv_weight=0.01)
    # 8x8 crops have sharp neighbour differences, so the TV prior is weaker than at 32x32
    assert float(psnr(result.images, images)[0]) > 20.0
    assert 0.0 <= float(result.images.min()) and float(result.images.max()) <= 1.0


def test_fedavg_aware_inverting_gradients(tiny):
    net, images, labels, _ = _case(tiny, 36)
    spec = FedAvgSpec(lr=0.1, local_steps=3)
    before, after = client_weight_update(net, images, labels, lr=spec.lr,
                                         local_steps=spec.local_steps)
    update = [b - a for b, a in zip(before, after)]
    result = run_attack("ig-fedavg", net, update, input_shape=(3, 8, 8), num_classes=10,
                        iterations=400, restarts=2, device="cpu", seed=0, fedavg=spec,
                        tv_weight=0.01)
    assert float(psnr(result.images, images)[0]) > 20.0
    with pytest.raises(AttackConfigError, match="fedavg"):
        run_attack("ig-fedavg", net, update, input_shape=(3, 8, 8), num_classes=10)


def test_analytic_first_layer_is_exact(tiny):
    net, images, labels, gradient = _case(tiny, 50, model="mlp")
    result = analytic_first_layer(net, gradient, input_shape=(3, 8, 8))
    assert float(((result.images - images) ** 2).mean()) < 1e-10
    assert result.labels.tolist() == labels.tolist()


def test_analytic_hidden_layer_recovers_without_first_layer_gradient(tiny):
    net, images, _, gradient = _case(tiny, 70, model="mlp", width=256)  # 256 >= 192 inputs
    gradient[0] = torch.full_like(gradient[0], float("nan"))  # first layer hidden
    gradient[1] = torch.full_like(gradient[1], float("nan"))
    result = analytic_hidden(net, gradient, input_shape=(3, 8, 8))
    assert float(((result.images - images) ** 2).mean()) < 1e-8


def test_analytic_unknown_bias_never_reads_the_bias_gradient(tiny):
    net, images, labels, gradient = _case(tiny, 90, model="mlp", width=64)
    gradient[1] = torch.full_like(gradient[1], float("nan"))
    result = analytic_unknown_bias(net, gradient, input_shape=(3, 8, 8))
    assert float(((result.images - images) ** 2).mean()) < 1e-8
    assert result.labels.tolist() == labels.tolist()


def test_analytic_refuses_what_it_cannot_do(tiny):
    net, _, _, gradient = _case(tiny, 0)
    with pytest.raises(AttackConfigError, match="first layer is Linear"):
        analytic_first_layer(net, gradient, input_shape=(3, 8, 8))
    mlp, _, _, mlp_gradient = _case(tiny, 0, model="mlp")
    with pytest.raises(AttackConfigError, match="batch size 1"):
        analytic_first_layer(mlp, mlp_gradient, input_shape=(3, 8, 8), batch_size=2)
    with pytest.raises(ShapeMismatchError, match="expected 6 gradient tensors"):
        analytic_first_layer(mlp, mlp_gradient[:-1], input_shape=(3, 8, 8))


def test_noise_gradient_does_not_recover_the_image(tiny):
    net, images, _, gradient = _case(tiny, 12)
    g = torch.Generator().manual_seed(5)
    noise = [torch.randn(t.shape, generator=g) * t.std() for t in gradient]
    result = run_attack("dlg", net, noise, input_shape=(3, 8, 8), num_classes=10,
                        iterations=30, restarts=1, device="cpu", seed=1)
    assert not score(result.images, result.labels, images, tiny.labels[12:13])[0].recovered()
    mlp, _, _, mlp_gradient = _case(tiny, 12, model="mlp")
    noise = [torch.randn(t.shape, generator=g) * t.std() for t in mlp_gradient]
    result = analytic_first_layer(mlp, noise, input_shape=(3, 8, 8))
    assert float(psnr(result.images, images)[0]) < 20.0


def test_unknown_attack_name_lists_valid_names():
    net = build_model("lenet", image_size=8)
    with pytest.raises(UnknownNameError) as info:
        run_attack("gan", net, [], input_shape=(3, 8, 8), num_classes=10)
    assert all(name in str(info.value) for name in ATTACK_NAMES)


def test_cuda_request_without_gpu_is_a_typed_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from leakage.attacks import resolve_device
    from leakage.errors import DeviceError

    with pytest.raises(DeviceError):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


@pytest.mark.parametrize("poison", ["inf", "zero-gradient"])
def test_dead_lane_restarts_from_a_fresh_draw(poison):
    """A lane whose first draw reads +inf, or whose gradient vanished (the saturated-sigmoid
    freeze), is redrawn within its own steps and still converges; its neighbour is unaffected."""
    from leakage.attacks.batched_lbfgs import minimise_lanes

    target = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, 0.5]])
    draws: list[int] = []

    def objective(x, lanes):
        loss = ((x - target[lanes]) ** 2).sum(1)
        grad = 2 * (x - target[lanes])
        poisoned = (lanes == 0) & (len(draws) == 0)
        if poison == "inf":
            loss = torch.where(poisoned, torch.full_like(loss, float("inf")), loss)
        else:
            loss = torch.where(poisoned, torch.full_like(loss, 1e3), loss)
            grad = torch.where(poisoned[:, None], 0.0, grad)
        return loss, grad

    def redraw(lanes):
        draws.extend(lanes.tolist())
        return torch.zeros(len(lanes), 3)

    result = minimise_lanes(objective, torch.full((2, 3), 9.0), steps=30, scale=torch.ones(2),
                            converged=1e-12, check_every=2, redraw=redraw)
    assert draws == [0]
    assert result.redraws.tolist() == [1, 0]
    assert torch.allclose(result.best, target, atol=1e-5)
    assert result.steps.max() <= 30
    assert float(result.best_loss.max()) < 1e-12


def test_a_settled_lane_that_stalls_is_not_redrawn():
    """Below ``settled`` a lane that stops improving (a float32 floor) keeps its point;
    above it the same stall counts as dead and is redrawn."""
    from leakage.attacks.batched_lbfgs import minimise_lanes

    floors = torch.tensor([1e-6, 0.5])  # lane 0 stalls in the basin, lane 1 far from it

    def objective(x, lanes):
        return (x ** 2).sum(1) + floors[lanes], 2 * x

    draws: list[int] = []

    def redraw(lanes):
        draws.extend(lanes.tolist())
        return torch.zeros(len(lanes), 2)

    minimise_lanes(objective, torch.ones(2, 2), steps=40, scale=torch.ones(2), converged=0.0,
                   settled=1e-4, check_every=2, patience=2, redraw=redraw)
    assert 0 not in draws and 1 in draws


def test_batched_lbfgs_direction_is_the_two_loop_recursion():
    """The compact form gives the same -H g as torch.optim.LBFGS's two-loop recursion,
    per lane, including a lane that rejected a pair."""
    from leakage.attacks.batched_lbfgs import BatchedLBFGS

    g = torch.Generator().manual_seed(0)
    dim, history = 12, 4
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    hessian = a @ a.T + dim * torch.eye(dim, dtype=torch.float64)
    memory = BatchedLBFGS(2, dim, history=history, device=torch.device("cpu"), dtype=torch.float64)
    pairs = []
    for k in range(7):
        s = torch.randn(dim, generator=g, dtype=torch.float64)
        accept = torch.tensor([True, k != 5])
        memory.remember(torch.stack([s, s]), torch.stack([hessian @ s] * 2), accept)
        pairs.append((k, s, hessian @ s))
    grad = torch.randn(dim, generator=g, dtype=torch.float64)
    direction, has_memory = memory.direction(torch.stack([grad, grad]))
    assert has_memory.tolist() == [True, True]

    def two_loop(kept):
        q, alphas = -grad.clone(), []
        for _, s, y in reversed(kept):
            alphas.append(float(s @ q / (y @ s)))
            q -= alphas[-1] * y
        alphas.reverse()
        r = q * float(kept[-1][1] @ kept[-1][2] / (kept[-1][2] @ kept[-1][2]))
        for (_, s, y), alpha in zip(kept, alphas):
            r += s * (alpha - float(y @ r / (y @ s)))
        return r

    assert torch.allclose(direction[0], two_loop(pairs[-history:]), rtol=1e-9, atol=1e-12)
    lane1 = [p for p in pairs[-history:] if p[0] != 5]
    assert torch.allclose(direction[1], two_loop(lane1), rtol=1e-9, atol=1e-12)

    # A forgotten lane starts again from the pairs stored after it (its old ones must not
    # leak into S^T Y); the last pass's products with the gradient are reused by direction.
    memory.forget(torch.tensor([False, True]))
    both = torch.stack([grad, grad])
    for k in (7, 8):
        s = torch.randn(dim, generator=g, dtype=torch.float64)
        memory.remember(torch.stack([s, s]), torch.stack([hessian @ s] * 2), torch.tensor([True, True]),
                        both if k == 8 else None)
        pairs.append((k, s, hessian @ s))
    direction, _ = memory.direction(both)
    assert torch.allclose(direction[0], two_loop(pairs[-history:]), rtol=1e-9, atol=1e-12)
    assert torch.allclose(direction[1], two_loop(pairs[-2:]), rtol=1e-9, atol=1e-12)


def test_many_problems_in_one_solve(tiny):
    """Two gradients, two restarts each, one batched solve: both images recovered, each
    result with its own labels and its lanes' steps."""
    from leakage.attacks.deep_leakage import MatchingProblem, solve_matching

    net = build_model("lenet", image_size=8, seed=0)
    problems, originals, truths = [], [], []
    for index in (12, 60):
        images, labels = tiny.images[index:index + 1], tiny.labels[index:index + 1]
        problems.append(MatchingProblem(client_gradients(net, images, labels), labels, index))
        originals.append(images)
        truths.append(labels.tolist())
    results = solve_matching("idlg", net, problems, input_shape=(3, 8, 8), num_classes=10,
                             batch_size=1, iterations=60, restarts=2, device="cpu")
    assert len(results) == 2
    for result, images, truth in zip(results, originals, truths):
        assert float(psnr(result.images, images)[0]) > 30.0
        assert result.labels.tolist() == truth
        assert 1 <= result.iterations <= 2 * 60


def test_convnet_lanes_use_the_generic_path(tiny):
    """A model without the LeNet fast path (vmap per lane) still solves a 2-lane problem."""
    net = build_model("convnet", image_size=8, seed=0, width=4)
    images, labels = tiny.images[12:13], tiny.labels[12:13]
    gradient = client_gradients(net, images, labels)
    result = run_attack("idlg", net, gradient, input_shape=(3, 8, 8), num_classes=10,
                        iterations=5, restarts=2, device="cpu", seed=0)
    assert result.images.shape == (1, 3, 8, 8) and np.isfinite(result.loss)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("small_pass", [64, 0])
@pytest.mark.parametrize("labelled", [False, True])
@pytest.mark.parametrize("model_name", ["lenet", "mlp", "convnet"])
def test_lane_pass_matches_plain_autograd(tiny, model_name, labelled, small_pass, batch,
                                          monkeypatch):
    """Per lane, the batched objective's distance and its derivative in the images equal
    DLG's (soft labels) or iDLG's (fixed labels) loss on that lane alone, by double
    backward through the model: the hand-written first-order pass for LeNet/MLP (both of
    its convolution forms: ``small_pass`` 64 takes unfold + product, 0 conv2d), vmap for
    the rest."""
    from leakage.attacks import deep_leakage
    from leakage.attacks.common import l2_distance, soft_cross_entropy
    from leakage.attacks.deep_leakage import MatchingProblem, _Objective, lane_layers

    monkeypatch.setattr(deep_leakage, "SMALL_PASS", small_pass)
    net = build_model(model_name, image_size=8, seed=0, width=8)
    assert (lane_layers(net) is None) == (model_name == "convnet")
    lanes = 3
    problems = [MatchingProblem(client_gradients(net, tiny.images[i:i + batch],
                                                 tiny.labels[i:i + batch]),
                                tiny.labels[i:i + batch] if labelled else None, 0) for i in (0, 30)]
    lane_problem = torch.tensor([0, 1, 1])
    objective = _Objective(net, problems, lane_problem, batch_size=batch, input_shape=(3, 8, 8),
                           num_classes=10, device=torch.device("cpu"))
    x = torch.randn(lanes, objective.dim, generator=torch.Generator().manual_seed(3))
    distance, gradient = objective(x, torch.arange(lanes))
    for lane in range(lanes):
        problem = problems[int(lane_problem[lane])]
        point = x[lane].clone().requires_grad_(True)
        images = point[:batch * 192].view(batch, 3, 8, 8)
        if problem.labels is None:
            loss = soft_cross_entropy(net(images), point[batch * 192:].view(batch, 10))
        else:
            loss = F.cross_entropy(net(images), problem.labels)
        dummy = torch.autograd.grad(loss, list(net.parameters()), create_graph=True)
        expected = l2_distance(dummy, problem.observed)
        (expected_grad,) = torch.autograd.grad(expected, point)
        assert torch.allclose(distance[lane], expected.detach(), rtol=1e-4)
        # float32 round-off of the whole sum: absolute, on the gradient's own scale
        atol = 1e-5 * float(expected_grad.abs().max())
        assert torch.allclose(gradient[lane], expected_grad, rtol=1e-3, atol=atol)


@pytest.mark.slow
def test_idlg_recovers_a_batch_of_eight_at_32x32_with_the_prior():
    """Issue 15's hardest reach point, shortened: 8 images of 8 classes at 32x32 (more
    unknowns than the gradient holds), labels from the neutral-image counts, the default
    smoothness prior; plain matching (prior 0) lands elsewhere on the solution set."""
    from leakage.attacks.deep_leakage import MatchingProblem, solve_matching
    from leakage.metrics import score

    data = load_embedded(32)
    index = [12 * c + 11 for c in range(2, 10)]
    images, labels = data.images[index], data.labels[index]
    net = build_model("lenet", image_size=32, seed=0)
    gradient = client_gradients(net, images, labels)
    found = infer_label_counts(net, gradient, 8, input_shape=(3, 32, 32))
    psnrs = {}
    for prior in (None, 0.0):
        (result,) = solve_matching("idlg", net, [MatchingProblem(gradient, found, 0)],
                                   input_shape=(3, 32, 32), num_classes=10, batch_size=8,
                                   iterations=150, restarts=1, device="cpu", prior=prior)
        psnrs[prior] = [s.psnr for s in score(result.images, result.labels, images, labels)]
    assert sum(p >= 20.0 for p in psnrs[None]) >= 6
    assert sum(p >= 20.0 for p in psnrs[0.0]) <= 2
