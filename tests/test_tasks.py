"""The line tasks, their least-squares optimum, heavy-ball tuning and comparison."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import momentax
import momentax.training
from momentax import tasks


class DataTest(parameterized.TestCase):
    def test_noisy_data_is_reproducible_from_its_seed(self):
        chex.assert_trees_all_equal(tasks.noisy_line(seed=7), tasks.noisy_line(seed=7))
        a, b = tasks.noisy_line(seed=7), tasks.noisy_line(seed=8)
        assert not np.array_equal(a.train.y, b.train.y)

    def test_noisy_data_follows_its_parameters(self):
        task = tasks.noisy_line(
            seed=1,
            slope=-2.0,
            intercept=0.5,
            num_points=4000,
            x_range=(-1.0, 3.0),
            noise_std=0.5,
            test_fraction=0.25,
        )
        assert task.train.x.shape == (3000,) and task.test.x.shape == (1000,)
        x = np.concatenate([task.train.x, task.test.x])
        y = np.concatenate([task.train.y, task.test.y])
        assert x.min() >= -1.0 and x.max() <= 3.0
        residual = y - (-2.0 * x + 0.5)
        # 4000 draws: the sample mean and std are within 4 standard errors.
        assert abs(residual.mean()) < 4 * 0.5 / math.sqrt(4000)
        assert abs(residual.std() - 0.5) < 4 * 0.5 / math.sqrt(2 * 4000)

    def test_tiny_is_the_notebooks_data(self):
        task = tasks.tiny_line()
        np.testing.assert_array_equal(task.train.x, [1.0, 2.0, 3.0])
        np.testing.assert_array_equal(task.train.y, [2.0, 4.0, 6.0])
        assert task.test is None
        assert task.reference == tasks.Reference(
            epochs=20, learning_rate=0.1, momentum=0.9
        )

    def test_blog_reference_settings(self):
        assert tasks.noisy_line().reference == tasks.Reference(450, 0.01, 0.93)

    def test_tasks_name_their_write_ups_by_title(self):
        assert tasks.noisy_line().write_up == tasks.BLOG_TITLE
        assert tasks.tiny_line().write_up == tasks.NOTEBOOK_TITLE
        assert tasks.BLOG_TITLE == "Gradient Descent: Exploring Momentum"
        assert tasks.NOTEBOOK_TITLE == "SGD with Momentum (From Scratch)"

    def test_docstrings_name_the_write_ups_by_title(self):
        # "the post" or "the notebook" alone leaves the reader guessing which.
        import inspect
        import re

        import momentax.tasks.cli

        vague = re.compile(r"\bthe (blog )?post\b|\bthe notebook\b", re.IGNORECASE)
        for module in (tasks, momentax.tasks.cli):
            for name in [None, *dir(module)]:
                obj = module if name is None else getattr(module, name)
                doc = inspect.getdoc(obj) if callable(obj) or name is None else None
                if doc and vague.search(doc):
                    titles = (tasks.BLOG_TITLE, tasks.NOTEBOOK_TITLE)
                    found = " ".join(doc.split())
                    assert any(title in found for title in titles), (name, doc)

    def test_zero_test_fraction_means_no_test_split(self):
        assert tasks.noisy_line(test_fraction=0.0).test is None

    @parameterized.named_parameters(
        ("negative_seed", {"seed": -1}, ValueError, "seed must be an integer >= 0"),
        ("bool_seed", {"seed": True}, ValueError, "seed"),
        ("nan_slope", {"slope": math.nan}, ValueError, "slope must be finite"),
        ("text_intercept", {"intercept": "3"}, TypeError, "intercept"),
        ("empty_range", {"x_range": (1.0, 1.0)}, ValueError, "low < high"),
        ("negative_noise", {"noise_std": -1.0}, ValueError, "noise_std must be >= 0"),
        (
            "all_test",
            {"test_fraction": 1.0},
            ValueError,
            r"test_fraction must be in \[0, 1\)",
        ),
        ("no_test", {"num_points": 2}, ValueError, "rounds to no test points"),
        ("no_train", {"num_points": 2, "test_fraction": 0.5}, ValueError, "2 training"),
        ("float64", {"dtype": jnp.float64}, ValueError, "64-bit"),
        ("int_dtype", {"dtype": jnp.int32}, ValueError, "floating"),
        ("triple_range", {"x_range": (0, 1, 2)}, TypeError, r"x_range must be a pair"),
        ("number_range", {"x_range": 5}, TypeError, r"x_range must be a pair"),
        ("text_bound", {"x_range": (0, "1")}, TypeError, r"x_range\[1\] must be a"),
        ("bool_slope", {"slope": np.True_}, TypeError, "slope must be a real number"),
    )
    def test_rejects(self, kwargs, error, message):
        with pytest.raises(error, match=message):
            tasks.noisy_line(**kwargs)

    def test_numpy_scalars_are_the_numbers_they_hold(self):
        given = tasks.noisy_line(
            slope=np.float32(4.0),
            intercept=np.int64(3),
            x_range=(np.float64(0.0), np.float32(1.0)),
            noise_std=np.float64(1.0),
            test_fraction=np.float64(0.2),
        )
        expected = tasks.noisy_line()
        for got, want in zip(
            jax.tree.leaves(given), jax.tree.leaves(expected), strict=True
        ):
            np.testing.assert_array_equal(got, want)


class OptimumTest(parameterized.TestCase):
    @parameterized.parameters("noisy", "tiny")
    def test_least_squares_zeroes_the_gradient(self, name):
        with jax.enable_x64(True):
            task = tasks.TASKS[name](dtype=jnp.float64)
            optimum = tasks.least_squares(task)
            params = {k: jnp.float64(v) for k, v in optimum.params.items()}
            grads = jax.grad(tasks.mse_loss)(params, task.train)
            chex.assert_trees_all_close(grads, {"k": 0.0, "b": 0.0}, atol=1e-12)
            loss = tasks.mse_loss(params, task.train)
            assert abs(float(loss) - optimum.train_loss) < 1e-12

    def test_exact_loss_is_the_mse_in_float64(self):
        with jax.enable_x64(True):
            task = tasks.noisy_line(dtype=jnp.float64)
            k, b = np.linspace(-3.0, 5.0, 7), np.linspace(4.0, -1.0, 7)
            expected = [
                tasks.mse_loss({"k": ki, "b": bi}, task.train)
                for ki, bi in zip(k, b, strict=True)
            ]
            # The moment formula cancels terms of size mean(y^2) ~ 30: 1e-13 covers
            # its float64 rounding.
            np.testing.assert_allclose(
                tasks.exact_loss(k, b, task.train), expected, rtol=1e-13
            )

    def test_exact_loss_is_never_negative_at_a_zero_loss(self):
        # y = 2x exactly: around (2, 0) the moment formula's terms (~19) cancel to
        # rounding, of either sign; a mean of squares is clamped at 0.
        task = tasks.tiny_line()
        k = 2.0 + np.linspace(-1e-7, 1e-7, 201)[:, None]
        b = np.linspace(-1e-7, 1e-7, 201)[None, :]
        losses = tasks.exact_loss(k, b, task.train)
        assert losses.min() == 0.0
        assert tasks.least_squares(task).train_loss >= 0.0
        # nan and inf (a diverged run) are kept as they are.
        assert np.isnan(tasks.exact_loss(np.nan, 0.0, task.train))
        assert tasks.exact_loss(1e200, 0.0, task.train) == np.inf

    def test_hessian_is_exact(self):
        with jax.enable_x64(True):
            task = tasks.noisy_line(dtype=jnp.float64)
            flat = lambda v: tasks.mse_loss({"k": v[0], "b": v[1]}, task.train)  # noqa: E731
            # Jitted: op by op, the nested differentiation took seconds.
            expected = jax.jit(jax.hessian(flat))(jnp.zeros(2, jnp.float64))
            np.testing.assert_allclose(tasks.hessian(task.train), expected, rtol=1e-12)
        big, small = tasks.curvature_bounds(task.train)
        np.testing.assert_allclose(
            np.linalg.eigvalsh(expected), [small, big], rtol=1e-12
        )


class HeavyBallTuningTest(parameterized.TestCase):
    def test_formula(self):
        tuning = momentax.heavy_ball_tuning(max_curvature=9.0, min_curvature=1.0)
        # sqrt(kappa) = 3: lr = 4 / (3 + 1)^2, rate = (3 - 1) / (3 + 1).
        assert tuning == momentax.HeavyBallTuning(0.25, 0.25, 0.5)

    def test_perfect_conditioning_is_a_newton_step(self):
        tuning = momentax.heavy_ball_tuning(4.0, 4.0)
        assert tuning == momentax.HeavyBallTuning(0.25, 0.0, 0.0)

    @parameterized.named_parameters(
        ("zero", (1.0, 0.0), ValueError, "min_curvature must be a finite number > 0"),
        (
            "inf",
            (math.inf, 1.0),
            ValueError,
            "max_curvature must be a finite number > 0",
        ),
        ("order", (1.0, 2.0), ValueError, "min_curvature must be <= max_curvature"),
        (
            "text",
            ("big", 1.0),
            TypeError,
            "max_curvature must be a concrete real number",
        ),
        (
            # 4 / (sqrt(L) + sqrt(m))^2 is about 1/L: above the largest float.
            "lr_overflows",
            (5e-324, 5e-324),
            ValueError,
            "max_curvature=5e-324 .* is so small that the learning rate .* exceeds",
        ),
    )
    def test_rejects(self, args, error, message):
        with pytest.raises(error, match=message):
            momentax.heavy_ball_tuning(*args)

    def test_tiny_curvatures_give_a_finite_rate_while_it_fits(self):
        # lr = 4 / (2 sqrt(L))^2 = 1 / L: finite for L = 1e-308, not for 5e-324.
        tuning = momentax.heavy_ball_tuning(1e-308, 1e-308)
        assert math.isfinite(tuning.learning_rate)
        assert tuning.learning_rate == pytest.approx(1e308, rel=1e-12)

    def test_rejects_traced_curvature(self):
        with pytest.raises(TypeError, match="not traced"):
            jax.jit(lambda c: momentax.heavy_ball_tuning(c, 1.0))(2.0)

    @parameterized.parameters("sutskever", "pytorch")
    def test_measured_rate_matches_theory(self, convention):
        # On an ill-conditioned noisy task (kappa about 630) in float64, the
        # distance to the optimum must shrink by the theoretical factor
        # r = sqrt(beta) per step. At the optimal tuning the extreme eigenvalues
        # give double roots, so the error vector is (A + B t) r^t and, once B t
        # dominates, the measured rate over steps t1..t2 is r (t2/t1)^(1/(t2-t1))
        # at most. It cannot be below r: r is the spectral radius of the
        # iteration. Detuning lr or momentum by 10% moves the measured rate by
        # 2% or more.
        t1, t2 = 100, 300
        with jax.enable_x64(True):
            task = tasks.noisy_line(x_range=(2.0, 3.0), dtype=jnp.float64)
            tuning = momentax.heavy_ball_tuning(*tasks.curvature_bounds(task.train))
            opt = momentax.momentum(
                tuning.learning_rate, momentum=tuning.momentum, convention=convention
            )
            result = momentax.training.fit(
                tasks.mse_loss,
                opt,
                tasks.init_params(jnp.float64),
                data=task.train,
                num_steps=t2 + 1,
                record=("params",),
            )
            optimum = tasks.least_squares(task).params
            path = np.stack([result.history["params"][n] - optimum[n] for n in "kb"], 1)
        distance = np.linalg.norm(path, axis=1)
        # Still far above float64 rounding (1e-16 of params of size 1-10).
        assert distance[t2] > 1e-12
        measured = (distance[t2] / distance[t1]) ** (1 / (t2 - t1))
        polynomial = (t2 / t1) ** (1 / (t2 - t1))
        # 1e-4: float64 rounding of the distances, relative to the window.
        assert tuning.rate * (1 - 1e-4) <= measured, (measured, tuning)
        assert measured <= tuning.rate * polynomial * (1 + 1e-4), (measured, tuning)

    def test_untuned_momentum_is_slower_than_the_tuned_rate(self):
        # The same measurement for the blog's settings gives a rate far from
        # optimal (sqrt(0.93) = 0.96 against about 0.63), so the test above can fail.
        task = tasks.noisy_line()
        tuning = momentax.heavy_ball_tuning(*tasks.curvature_bounds(task.train))
        assert tuning.rate < 0.7 < math.sqrt(0.93)


def run_all(task, epochs, *, tuned=True):
    """The optimum and the contenders' runs (``tuned=False``: the hand-set ones).

    Compiling the auto-tuned contenders takes seconds: leave them out where
    nothing is asserted about them.
    """
    optimum = tasks.least_squares(task)
    runs = {
        c.name: tasks.run(task, c, epochs)
        for c in tasks.contenders(task)
        if tuned or not c.tuned
    }
    return optimum, runs


# The hand-set contenders on each write-up's task, run once and shared by the
# tests that only read the runs: the blog's settings, and the tiny task for 300
# epochs. The auto-tuned ones (seconds of compiling each) are TunedContenderTest's.
@functools.cache
def blog_runs():
    task = tasks.noisy_line()
    return run_all(task, task.reference.epochs, tuned=False)


@functools.cache
def tiny_runs():
    return run_all(tasks.tiny_line(), 300, tuned=False)


class ComparisonTest(parameterized.TestCase):
    def test_contenders(self):
        task = tasks.noisy_line()
        found = {c.name: c for c in tasks.contenders(task)}
        assert list(found) == [
            "sgd",
            "momentum",
            "nesterov",
            "heavy-ball",
            "autotune",
            "autotune-hvp",
        ]
        assert (found["momentum"].learning_rate, found["momentum"].momentum) == (
            0.01,
            0.93,
        )
        assert found["nesterov"].nesterov and not found["momentum"].nesterov
        tuning = momentax.heavy_ball_tuning(*tasks.curvature_bounds(task.train))
        assert found["heavy-ball"].learning_rate == tuning.learning_rate
        assert found["heavy-ball"].momentum == tuning.momentum
        for name in ("autotune", "autotune-hvp"):  # nothing hand-set
            assert found[name].tuned and found[name].learning_rate is None
            assert found[name].momentum is None and not found[name].nesterov
        assert not any(found[name].tuned for name in list(found)[:4])

    @parameterized.named_parameters(
        (
            "no_momentum",
            {"momentum": 0.0},
            r"momentum must be in \(0, 1\]: 0 would make momentum and Nesterov",
        ),
        (
            "negative_momentum",
            {"momentum": -0.1},
            r"momentum must be in \(0, 1\]: a negative momentum is not momentum",
        ),
        (
            "nan_momentum",
            {"momentum": float("nan")},
            r"momentum must be in \(0, 1\]: not a number",
        ),
        (
            "momentum_above_1",
            {"momentum": 1.5},
            r"momentum must be in \(0, 1\]: above 1 the velocity grows",
        ),
        ("no_lr", {"learning_rate": 0.0}, "learning_rate must be > 0"),
        ("negative_lr", {"learning_rate": -0.1}, "learning_rate must be > 0"),
    )
    def test_contenders_reject(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            tasks.contenders(tasks.tiny_line(), **kwargs)

    @parameterized.named_parameters(
        ("text_lr", {"learning_rate": "0.1"}, r"learning_rate .* pass float\('0.1'\)"),
        ("text_momentum", {"momentum": "0.9"}, r"momentum .* pass float\('0.9'\)"),
        ("bool_lr", {"learning_rate": True}, "learning_rate must be a real number"),
        ("array_momentum", {"momentum": [0.9]}, "momentum must be a real number"),
    )
    def test_contenders_reject_non_numbers(self, kwargs, message):
        with pytest.raises(TypeError, match=message):
            tasks.contenders(tasks.tiny_line(), **kwargs)

    def test_contenders_take_numpy_numbers(self):
        task = tasks.tiny_line()
        given = tasks.contenders(
            task, learning_rate=np.float32(0.5), momentum=np.float64(0.5)
        )
        assert (given[1].learning_rate, given[1].momentum) == (0.5, 0.5)
        assert type(given[1].learning_rate) is float

    @parameterized.parameters(0, -1, 2.5)
    def test_run_names_its_epochs(self, epochs):
        task = tasks.tiny_line()
        with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
            tasks.run(task, tasks.contenders(task)[0], epochs)

    def test_blog_settings_reach_least_squares(self):
        optimum, runs = blog_runs()
        for name in ("momentum", "nesterov", "heavy-ball"):
            k, b = runs[name].trajectory[-1]
            # float32 params near 3-4: a few ulps (1e-6) times the condition
            # number (19) of the noise in the gradient is < 1e-4 relative.
            np.testing.assert_allclose(
                [k, b], [optimum.params["k"], optimum.params["b"]], rtol=1e-4
            )
            assert abs(runs[name].train_loss[-1] - optimum.train_loss) < 1e-5

    def test_tiny_task_reaches_y_equals_2x(self):
        _, runs = tiny_runs()
        for name in ("momentum", "nesterov", "heavy-ball"):
            # The slowest, momentum 0.9, shrinks the error by at least
            # sqrt(0.9) per epoch (about 1e-7 over 300 epochs from a distance of 2):
            # what remains is float32 rounding of k = 2 (1e-7), well under 1e-4.
            np.testing.assert_allclose(runs[name].trajectory[-1], [2.0, 0.0], atol=1e-4)

    @parameterized.named_parameters(
        ("default", {}),
        ("more_ill_conditioned", {"x_range": (1.0, 2.0)}),
    )
    def test_momentum_needs_fewer_epochs_than_sgd(self, kwargs):
        task = tasks.noisy_line(**kwargs)
        big, small = tasks.curvature_bounds(task.train)
        assert big / small > 15  # ill-conditioned
        optimum, runs = run_all(task, 4000, tuned=False)
        # Epochs to within 1%; never (None) counts as more than any number.
        reached = {
            name: tasks.epochs_to_tolerance(r, optimum) for name, r in runs.items()
        }
        epochs = {name: math.inf if e is None else e for name, e in reached.items()}
        assert max(epochs["momentum"], epochs["nesterov"]) < 4000, epochs
        assert epochs["heavy-ball"] < epochs["momentum"] < epochs["sgd"], epochs
        assert epochs["nesterov"] < epochs["sgd"], epochs

    def test_velocity_keeps_its_sign_after_the_gradient_flips(self):
        # The blog's observation: with momentum 0.93, k keeps moving the same way
        # for several epochs after its gradient has changed sign.
        run = blog_runs()[1]["momentum"]
        change = tasks.sign_change(run)
        assert change is not None and change.velocity_epoch is not None
        assert change.velocity_epoch - change.grad_epoch >= 5, change
        start, end = change.grad_epoch, change.velocity_epoch
        grad, velocity = (
            run.k_grad[start - 1 : end - 1],
            run.k_velocity[start - 1 : end - 1],
        )
        # Lr inside the velocity, v = mu*v - lr*g: a velocity with the gradient's
        # sign carries k uphill, past the point where the gradient turned.
        assert np.all(np.sign(grad) == np.sign(grad[0]))
        assert np.all(np.sign(velocity) == np.sign(velocity[0]))
        assert np.sign(velocity[0]) == np.sign(grad[0])
        assert np.sign(run.k_velocity[end - 1]) != np.sign(velocity[0])


@pytest.mark.slow  # compiles autotune with and without HVPs: > 5 s
class TunedContenderTest(parameterized.TestCase):
    """The auto-tuned contenders: momentax.autotune, nothing hand-set."""

    @parameterized.named_parameters(("noisy", "noisy", 450), ("tiny", "tiny", 300))
    def test_reaches_least_squares_and_records_its_tuning(self, name, epochs):
        task = tasks.noisy_line() if name == "noisy" else tasks.tiny_line()
        optimum = tasks.least_squares(task)
        target = [optimum.params["k"], optimum.params["b"]]
        for contender in tasks.contenders(task)[4:]:
            run = tasks.run(task, contender, epochs)
            # float32 params of size 2-4: a few ulps (1e-6) times the condition
            # number (19 noisy, 15 tiny) is well under 1e-4 relative; the tiny
            # optimum's b = 0 needs the absolute part.
            np.testing.assert_allclose(run.trajectory[-1], target, rtol=1e-4, atol=1e-5)
            assert abs(run.train_loss[-1] - optimum.train_loss) < 1e-5
            assert tasks.diverged_epoch(run) is None
            reached = tasks.epochs_to_tolerance(run, optimum)
            assert reached is not None and reached < epochs // 2, reached
            assert run.learning_rate.shape == run.momentum.shape == (epochs,)
            assert np.all(run.learning_rate > 0)
            assert np.all((run.momentum >= 0) & (run.momentum < 1))
            assert run.final_learning_rate == run.learning_rate[-1]
            assert run.final_momentum == run.momentum[-1]

    def test_is_autotune_stepped_by_hand(self):
        # The contenders' runs are momentax.autotune's steps, the HVP one with
        # the training loss as value_fn, and the recorded lr and momentum are
        # the state's after each step.
        task = tasks.tiny_line()
        epochs = 12
        runs = []
        for contender, hvp in zip(
            tasks.contenders(task)[4:], (False, True), strict=True
        ):
            run = tasks.run(task, contender, epochs)
            runs.append(run)
            optimizer = momentax.autotune()

            @jax.jit
            def step(params, state, optimizer=optimizer, hvp=hvp):
                grads = jax.grad(tasks.mse_loss)(params, task.train)
                extra = {}
                if hvp:
                    extra["value_fn"] = lambda p: tasks.mse_loss(p, task.train)
                updates, state = optimizer.update(grads, state, params, **extra)
                return optax.apply_updates(params, updates), state

            params = tasks.init_params()
            state = optimizer.init(params)
            ks, rates, momenta = [], [], []
            for _ in range(epochs):
                params, state = step(params, state)
                ks.append(float(params["k"]))
                rates.append(float(optax.tree.get(state, "learning_rate")))
                momenta.append(float(optax.tree.get(state, "momentum")))
            # One jitted step per call here, a scan of them in fit: XLA may
            # fuse them differently, a few float32 ulps per step over 12 steps.
            np.testing.assert_allclose(run.trajectory[1:, 0], ks, rtol=1e-5)
            np.testing.assert_allclose(run.learning_rate, rates, rtol=1e-5)
            np.testing.assert_allclose(run.momentum, momenta, rtol=1e-5, atol=1e-7)
        plain, hvp_run = (
            tasks.run(task, c, epochs) for c in tasks.contenders(task)[4:]
        )
        assert not np.allclose(plain.learning_rate, hvp_run.learning_rate)


class DivergenceTest(parameterized.TestCase):
    def test_diverged_epoch_is_the_first_non_finite_loss(self):
        task = tasks.tiny_line()
        sgd = tasks.contenders(task, learning_rate=5.0)[0]
        run = tasks.run(task, sgd, 200)
        epoch = tasks.diverged_epoch(run)
        assert epoch is not None and 1 < epoch < 200
        assert np.all(np.isfinite(run.train_loss[:epoch]))
        assert not np.isfinite(run.train_loss[epoch])

    def test_converging_run_does_not_diverge(self):
        _, runs = tiny_runs()  # the hand-set contenders, 300 epochs
        assert len(runs) == 4
        for run in runs.values():
            assert tasks.diverged_epoch(run) is None, run.contender.name


class ToleranceTest(parameterized.TestCase):
    def make_run(self, ks):
        trajectory = np.stack([np.asarray(ks, float), np.zeros(len(ks))], 1)
        contender = tasks.contenders(tasks.tiny_line())[0]
        return tasks.Run(
            contender, trajectory, np.zeros(len(ks)), None, np.zeros(len(ks) - 1), None
        )

    @parameterized.parameters(
        ([0.0, 1.0, 1.5, 1.99, 2.0], 3),
        ([0.0, 2.0, 3.0, 2.0, 2.0], 3),  # leaving the band again resets the count
        ([2.0, 2.0], 0),
        ([0.0, 1.0, 1.9], None),
        ([0.0, 2.0, float("nan")], None),  # diverged
        ([0.0, 2.0, float("inf"), 2.0], 3),
    )
    def test_epochs_to_tolerance(self, ks, expected):
        optimum = tasks.Optimum({"k": 2.0, "b": 0.0}, 0.0, None)
        assert tasks.epochs_to_tolerance(self.make_run(ks), optimum) == expected

    def test_sign_change_through_zero(self):
        run = self.make_run([0.0] * 5)._replace(
            k_grad=np.array([1.0, 0.0, -1.0, -2.0]), k_velocity=None
        )
        assert tasks.sign_change(run) == tasks.SignChange(
            grad_epoch=3, velocity_epoch=None
        )

    def test_sign_change(self):
        run = self.make_run([0.0] * 6)._replace(
            k_grad=np.array([-3.0, -1.0, 2.0, 1.0, 0.5]),
            k_velocity=np.array([1.0, 2.0, 1.0, 0.5, -0.1]),
        )
        assert tasks.sign_change(run) == tasks.SignChange(
            grad_epoch=3, velocity_epoch=5
        )


class WideRegressionTest(parameterized.TestCase):
    def test_shapes_dtype_and_seeded_determinism(self):
        task = tasks.wide_regression(16, 4, 2, seed=3, dtype=jnp.float32)
        again = tasks.wide_regression(16, 4, 2, seed=3, dtype=jnp.float32)
        other = tasks.wide_regression(16, 4, 2, seed=4, dtype=jnp.float32)
        self.assertEqual(task.train.x.shape, (16, 4))
        self.assertEqual(task.train.y.shape, (16, 2))
        self.assertEqual(task.train.x.dtype, jnp.float32)
        chex.assert_trees_all_equal(task.train, again.train)
        self.assertFalse(np.array_equal(task.train.x, other.train.x))

    def test_noise_free_data_is_fit_exactly_by_the_true_params(self):
        task = tasks.wide_regression(32, 8, 3, noise=0.0)
        params = {k: jnp.asarray(v, jnp.float32) for k, v in task.true_params.items()}
        # Only float32 rounding is left: errors ~1e-7 on values ~1, squared.
        self.assertLess(float(tasks.linear_loss(params, task.train)), 1e-12)

    def test_reference_settings_converge(self):
        task = tasks.wide_regression()
        ref = task.reference
        result = momentax.training.fit(
            tasks.linear_loss,
            momentax.momentum(ref.learning_rate, ref.momentum),
            tasks.linear_init(256, 8),
            data=task.train,
            num_steps=ref.epochs,
        )
        loss = result.history["loss"]
        # Noise std 0.1: the loss floor is about 0.01 * (1 - p/n) = 0.005.
        self.assertLess(float(loss[-1]), 0.0075)
        self.assertGreater(float(loss[0]), 100 * float(loss[-1]))

    @parameterized.parameters(
        ({"num_examples": 0}, "num_examples"),
        ({"num_features": 2.5}, "num_features"),
        ({"num_outputs": -1}, "num_outputs"),
        ({"noise": -0.1}, "noise"),
    )
    def test_rejects_bad_sizes(self, overrides, name):
        with pytest.raises(ValueError, match=name):
            tasks.wide_regression(**overrides)

    @parameterized.parameters(jnp.int32, jnp.bool_, "int8")
    def test_rejects_non_floating_dtypes(self, dtype):
        # Integer data would truncate x and y (noisy_line refuses them too).
        with pytest.raises(ValueError, match="dtype must be a floating dtype"):
            tasks.wide_regression(num_examples=8, num_features=4, dtype=dtype)
        with pytest.raises(ValueError, match="dtype must be a floating dtype"):
            tasks.linear_init(4, 2, dtype)

    @parameterized.parameters(
        ((-1, 2), "num_features"), ((2, 0), "num_outputs"), ((2.0, 2), "num_features")
    )
    def test_linear_init_rejects_bad_sizes(self, sizes, name):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
            tasks.linear_init(*sizes)
