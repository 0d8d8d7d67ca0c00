r"""YellowFin's single-step rule for heavy ball, solved in closed form.

For heavy ball on a quadratic whose curvatures lie in :math:`[h_{\min},
h_{\max}]`, every momentum :math:`\mu \ge \mu_P` with

.. math::
    \mu_P = \left(\frac{\sqrt{h_{\max}/h_{\min}} - 1}
        {\sqrt{h_{\max}/h_{\min}} + 1}\right)^2

and the learning rate :math:`\eta = (1 - \sqrt\mu)^2 / h_{\min}` puts every
curvature in the robust region, where the distance to the minimum shrinks by
exactly :math:`\sqrt\mu` per step. Among those, the single-step rule picks the
:math:`\mu` that minimises the expected squared distance after one step,
:math:`\mu D^2 + \eta^2 C`, with :math:`D` the distance to the minimum and
:math:`C` the gradient variance. With :math:`x = \sqrt\mu` the derivative is
zero where :math:`x D^2 h_{\min}^2 = 2 C (1 - x)^3`, so :math:`y = 1 - x` is
the root in :math:`[0, 1]` of the cubic

.. math::
    y^3 + p\,y - p = 0, \qquad p = \frac{D^2 h_{\min}^2}{2C} \ge 0.

It has one real root (its derivative :math:`3y^2 + p` is positive). With
Cardano's :math:`y = u - v`, :math:`u^3 = p/2 + s`, :math:`v^3 = s - p/2`,
:math:`s = \sqrt{p^2/4 + p^3/27}`, and :math:`u - v = (u^3 - v^3)/(u^2 + uv +
v^2)`, writing :math:`r = p^{1/3}` and :math:`a = (1/2 + \sqrt{1/4 +
p/27})^{1/3}` gives

.. math::
    y = \frac{r}{a^2 + r/3 + r^2/(9 a^2)},

a sum of non-negative terms: no cancellation, and finite for every
:math:`p \in [0, 10^{30}]` (:math:`y = 0` at :math:`p = 0`, :math:`y \to 1`
as :math:`p \to \infty`).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

# y is 1 to float32 precision well before this, and its powers stay finite.
_LARGEST_P = 1e30


def cubic_root(p: jax.Array) -> jax.Array:
    r"""The real root :math:`y \in [0, 1]` of :math:`y^3 + p y - p = 0`.

    ``p`` is clipped to :math:`[0, 10^{30}]`; ``inf`` gives 1 and ``NaN`` gives
    1 too (the deterministic limit, :math:`C = 0`).
    """
    p = jnp.where(jnp.isnan(p), _LARGEST_P, jnp.clip(p, 0, _LARGEST_P))
    r = jnp.cbrt(p)
    a2 = jnp.cbrt(0.5 + jnp.sqrt(0.25 + p / 27)) ** 2
    return jnp.clip(r / (a2 + r / 3 + r * r / (9 * a2)), 0, 1)


def polyak_momentum(h_max: jax.Array, h_min: jax.Array) -> jax.Array:
    r"""Polyak's momentum :math:`\mu_P` for the range :math:`[h_{\min}, h_{\max}]`.

    :math:`\mu_P = ((\sqrt{h_{\max}} - \sqrt{h_{\min}}) /
    (\sqrt{h_{\max}} + \sqrt{h_{\min}}))^2`, written without the ratio
    :math:`h_{\max}/h_{\min}`, which may overflow.
    """
    big, small = jnp.sqrt(h_max), jnp.sqrt(h_min)
    return ((big - small) / (big + small)) ** 2


class Tuning(NamedTuple):
    """Holds a learning rate and momentum, as float32 scalars."""

    learning_rate: jax.Array
    momentum: jax.Array


def single_step(
    h_max: jax.Array,
    h_min: jax.Array,
    variance: jax.Array,
    distance: jax.Array,
    max_momentum: float,
) -> Tuning:
    r"""The single-step rule's :math:`(\eta, \mu)`, with the stability bound.

    ``h_min`` and ``h_max`` must be finite with :math:`0 < h_{\min} \le
    h_{\max}`; ``variance`` and ``distance`` finite and :math:`\ge 0`. The
    momentum is :math:`\max((1 - y)^2, \mu_P)`, at most ``max_momentum``;
    :math:`\eta = (1 - \sqrt\mu)^2 / h_{\min}`, at most
    :math:`2(1 + \mu)/h_{\max}` (binding only where ``max_momentum`` cut
    :math:`\mu` below :math:`\mu_P`: inside the robust region
    :math:`\eta h_{\max} \le (1 + \sqrt\mu)^2 \le 2(1 + \mu)`).
    """
    # p = (D h_min)^2 / (2C): C = 0 (no noise) gives p = inf, y = 1, mu = mu_P.
    scale = distance * h_min
    p = jnp.where(variance > 0, scale * scale / (2 * variance), jnp.inf)
    p = jnp.where((variance <= 0) & (scale <= 0), jnp.inf, p)
    root = 1 - cubic_root(p)
    momentum = jnp.minimum(
        jnp.maximum(root * root, polyak_momentum(h_max, h_min)), max_momentum
    )
    learning_rate = (1 - jnp.sqrt(momentum)) ** 2 / h_min
    learning_rate = jnp.minimum(learning_rate, 2 * (1 + momentum) / h_max)
    return Tuning(learning_rate, momentum)
