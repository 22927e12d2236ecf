"""The paper's illustrative figures (§2-3.3), recomputed with radref's own functions.

    python validation/theory_figures.py [--out docs/figures]

writes (PNG, about a second in all):

- ``fig02_unfolding.png``: a unimodal p_Z unfolded into a trimodal p_X by the
  uniform fold and the constant gating 1/3 (Fig. 2);
- ``fig04_absolute_value.png``: z = |x| turns a many-mode sine density into
  U[0, 1]; the gating p(x > 0 | z), p(x < 0 | z) carries the sine (Fig. 4);
- ``fig05_surjections.png``: three- and five-piece surjections with the same
  slopes, and f_K (Fig. 5);
- ``fig06_boundary_conditions.png``: log p(k | f(u)) + log|f'(u)| jumps at
  u = +-1 with three pieces, is continuous with five (Fig. 6);
- ``fig07_gating_weights.png``: the trigonometric weights of eq. 31-33 (Fig. 7);
- ``fig08_smoothing.png``: the uniform fold smooths p_X; the exact posterior
  gating undoes it (Fig. 8);
- ``fig08_theorem1.png``: repeated uniform folds and the bounds of eq. 35-37.

Every curve comes from radref.reference.theory, radref.core.surjection, radref.core.gating and
radref.core.slopes; docs/theory.md embeds the figures.
"""
import argparse
import os

import numpy as np

from radref.core.gating import interpolation_weights, log_gating_forward
from radref.user.plots import _pyplot
from radref.core.slopes import slopes_forward
from radref.core.surjection import surjection_forward, three_piece_forward
from radref.reference.theory import (absolute_value_fold, bump_mixture_density, derivative_sup,
                           fold_preimages, folds_needed, grid, posterior_gating,
                           sup_distance_to_uniform, trigonometric_density, unfold,
                           uniform_fold, uniform_fold_slopes, uniform_folds)

#: branch k = 0, 1, 2 (paper: 1, 2, 3) in the paper's red, green, blue
BRANCH_COLOURS = ("tab:red", "tab:green", "tab:blue")
BRANCH_LABELS = ("k = 0", "k = 1", "k = 2")

#: boundary gating used by Fig. 5 and 6 (the same as docs/exercises.md, exercise 1)
P = np.array([0.2, 0.5, 0.3])
Q = np.array([0.6, 0.3, 0.1])
#: gating logits s(z) of Fig. 6 (a free 3-vector, as in radref.core.layer1d)
GATE_LOGITS = np.array([0.7, -0.4, 1.1])


def _runs(x, k):
    """Split ``x`` into maximal runs of constant ``k``: list of (slice, k)."""
    edges = np.flatnonzero(np.diff(k)) + 1
    starts = np.concatenate([[0], edges])
    stops = np.concatenate([edges, [len(x)]])
    return [(slice(a, b), int(k[a])) for a, b in zip(starts, stops)]


def _label_once(ax, k, used):
    if k in used:
        return None
    used.add(k)
    return BRANCH_LABELS[k]


def _shade_pieces(ax, a, b, lo=-1.0, hi=1.0, alpha=0.12):
    for (left, right), colour in zip(((lo, a), (a, b), (b, hi)), BRANCH_COLOURS):
        ax.axvspan(left, right, color=colour, alpha=alpha, lw=0)


def figure_2(plt, out):
    """Fig. 2: p_X(x) = p_Z(f(x)) p(k | f(x)) alpha_k with p(k | z) = 1/3, alpha = 3."""
    slopes = uniform_fold_slopes()
    p_z = trigonometric_density([0.45])  # 1/2 + 0.45 cos(pi z): unimodal
    gate = lambda v: np.full(np.shape(v) + (3,), 1.0 / 3.0)  # noqa: E731
    p_x = unfold(p_z, [gate], [slopes])
    x = grid(1201)
    v, k, _, _ = three_piece_forward(x, slopes)
    px = p_x(x)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    used = set()
    for piece, kk in _runs(x, k):
        axes[0].fill_between(x[piece], px[piece], color=BRANCH_COLOURS[kk], alpha=0.35,
                             label=_label_once(axes[0], kk, used))
        axes[0].plot(x[piece], px[piece], color=BRANCH_COLOURS[kk])
        axes[2].plot(x[piece], v[piece], color=BRANCH_COLOURS[kk], lw=2)
    axes[0].set_title("(a) trimodal $p_X(x)$")
    axes[0].set_xlabel("x")
    axes[0].set_ylabel("$p_X(x)$")
    axes[0].legend(loc="upper center", fontsize=8, ncol=3)
    axes[0].set_ylim(0, 1.25)
    z = grid(401)
    axes[1].plot(z, p_z.pdf(z), color="k")
    axes[1].fill_between(z, p_z.pdf(z), color="0.6", alpha=0.3)
    axes[1].set_title("(b) unimodal $p_Z(z) = \\frac{1}{2} + 0.45\\cos(\\pi z)$")
    axes[1].set_xlabel("z")
    axes[1].set_ylabel("$p_Z(z)$")
    _shade_pieces(axes[2], slopes.a, slopes.b)
    axes[2].axhline(0.0, color="0.7", lw=0.5)
    axes[2].set_title("(c) $z = f_Z(x)$, uniform fold ($\\alpha = 3$)")
    axes[2].set_xlabel("x")
    axes[2].set_ylabel("z")
    axes[1].set_ylim(0, 1.25)
    fig.suptitle("Fig. 2: $p_X(x) = p_Z(f_Z(x))\\,p(k\\mid f_Z(x))\\,\\alpha_k$ with "
                 "$p(k\\mid z) = 1/3$: three copies of $p_Z$", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig02_unfolding.png"), dpi=110)
    plt.close(fig)


def figure_4(plt, out):
    """Fig. 4: z = |x| on a sine density; the gating carries the modes."""
    p_x = trigonometric_density([], [0.0, 0.0, 0.0, 0.45])  # 1/2 (1 + 0.9 sin(4 pi x))
    pdf_z, gating = absolute_value_fold(p_x)
    x = grid(1201)
    z = np.linspace(0.0, 1.0, 601)
    prob = gating(z)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.3))
    axes[0].plot(x, p_x.pdf(x), color="k")
    axes[0].fill_between(x, p_x.pdf(x), where=x < 0, color="tab:orange", alpha=0.35, lw=0)
    axes[0].fill_between(x, p_x.pdf(x), where=x >= 0, color="tab:purple", alpha=0.35, lw=0)
    axes[0].set_title("(a) $p_X(x) = \\frac{1}{2}(1 + 0.9\\sin 4\\pi x)$")
    axes[0].set_xlabel("x")
    axes[0].set_ylabel("$p_X(x)$")
    axes[0].set_ylim(0, 1.6)  # the densities (a) and (c) on one scale
    axes[1].plot(x[x < 0], np.abs(x[x < 0]), color="tab:orange", lw=2, label="x < 0")
    axes[1].plot(x[x >= 0], x[x >= 0], color="tab:purple", lw=2, label="x > 0")
    axes[1].set_title("(b) $z = |x|$")
    axes[1].set_xlabel("x")
    axes[1].set_ylabel("z")
    axes[1].legend(fontsize=8)
    axes[2].plot(z, pdf_z(z), color="k")
    axes[2].fill_between(z, pdf_z(z), color="0.6", alpha=0.3)
    axes[2].set_ylim(0, 1.6)
    axes[2].set_title("(c) $p_Z(z) = p_X(-z) + p_X(z)$ = U[0, 1]")
    axes[2].set_xlabel("z")
    axes[2].set_ylabel("$p_Z(z)$")
    axes[3].plot(z, prob[:, 1], color="tab:purple", label="$p(x > 0 \\mid z)$")
    axes[3].plot(z, prob[:, 0], color="tab:orange", label="$p(x < 0 \\mid z)$")
    axes[3].set_ylim(0, 1.3)
    axes[3].set_title("(d) gating $p(\\cdot \\mid z)$")
    axes[3].set_xlabel("z")
    axes[3].set_ylabel("probability")
    axes[3].legend(fontsize=8, loc="upper center", ncol=2)
    fig.suptitle("Fig. 4: all the structure of $p_X$ moves into the gating; "
                 "each branch of $z \\mapsto x$ is linear ($x = \\pm z$)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig04_absolute_value.png"), dpi=110)
    plt.close(fig)


def figure_5(plt, out):
    """Fig. 5: three- vs five-piece surjection with the same slopes; f_K."""
    slopes, _ = slopes_forward(np.log(P), np.log(Q))
    u = np.linspace(-2.0, 2.0, 2001)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.7))
    for ax, forward, title in ((axes[0], three_piece_forward, "(a) three pieces (eq. 14)"),
                               (axes[1], surjection_forward, "(b) five pieces (eq. 23)")):
        v, k, _, _ = forward(u, slopes)
        used = set()
        for piece, kk in _runs(u, k):
            ax.plot(u[piece], v[piece], color=BRANCH_COLOURS[kk], lw=2,
                    label=_label_once(ax, kk, used))
        # darker outside [-1, 1] (invertible: one preimage), lighter inside
        for (left, right), kk, shade in (((-2, -1), 0, 0.3), ((-1, slopes.a), 0, 0.12),
                                        ((slopes.a, slopes.b), 1, 0.12),
                                        ((slopes.b, 1), 2, 0.12), ((1, 2), 2, 0.3)):
            ax.axvspan(left, right, color=BRANCH_COLOURS[kk], alpha=shade, lw=0)
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.axhline(-1.0, color="k", ls="--", lw=0.8)
        ax.set_ylim(-3.5, 3.5)
        ax.set_xlabel("u")
        ax.set_ylabel("v = f(u)")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="upper left")
    _, k, _, _ = surjection_forward(u, slopes)
    for piece, kk in _runs(u, k):
        axes[2].plot(u[piece], kk + np.zeros(piece.stop - piece.start), color=BRANCH_COLOURS[kk],
                     lw=3)
    axes[2].set_yticks([0, 1, 2])
    axes[2].set_ylim(-0.5, 2.5)
    axes[2].set_xlabel("u")
    axes[2].set_ylabel("$f_K(u)$")
    axes[2].set_title("(c) $f_K$: the branch of $u$ (both versions)")
    fig.suptitle(f"Fig. 5: slopes from $P = ({', '.join(f'{p:g}' for p in P)})$, "
                 f"$Q = ({', '.join(f'{q:g}' for q in Q)})$ (eq. 26-30): "
                 f"$a = {float(slopes.a):.3f}$, $b = {float(slopes.b):.3f}$\n"
                 "dashed: $v = \\pm 1$; lighter shading: the folded (non-invertible) region "
                 "$[-1, 1]$, darker: one preimage only", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig05_surjections.png"), dpi=110)
    plt.close(fig)


def figure_6(plt, out):
    """Fig. 6: the pseudo log-Jacobian, discontinuous with three pieces, continuous with five."""
    slopes, _ = slopes_forward(np.log(P), np.log(Q))
    u = np.linspace(-2.0, 2.0, 4001)
    s = np.broadcast_to(GATE_LOGITS, (u.size, 3))
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.6))
    for row, forward, name in ((axes[0], three_piece_forward, "three pieces"),
                               (axes[1], surjection_forward, "five pieces")):
        v, k, log_slope, cache = forward(u, slopes)
        log_gate, _ = log_gating_forward(v, k, s, slopes.log_p, slopes.log_q)
        contribution = log_gate + log_slope
        # break the curves where the piece changes so that jumps stay visible
        # (the three-piece surjection keeps pieces 1 and 3 beyond -1 and 1, but
        # there the gating is forced: split there as well)
        segment = cache.piece + 10 * (u > 1.0) + 20 * (u < -1.0)
        used = set()
        for run, _ in _runs(u, segment):
            kk = int(k[run.start])
            row[0].plot(u[run], v[run], color=BRANCH_COLOURS[kk], lw=2,
                        label=_label_once(row[0], kk, used))
            row[1].plot(u[run], np.exp(log_gate[run]), color=BRANCH_COLOURS[kk], lw=2)
            row[2].plot(u[run], contribution[run], color=BRANCH_COLOURS[kk], lw=2)
        for ax in row:
            for edge in (-1.0, float(slopes.a), float(slopes.b), 1.0):
                ax.axvline(edge, color="0.75", lw=0.6, ls=":")
            ax.set_xlabel("u")
        for edge in (-1.0, 1.0):
            j = np.searchsorted(u, edge)
            jump = contribution[j + 1] - contribution[j - 1]
            if abs(jump) > 1e-3:
                row[2].annotate(f"jump {jump:+.2f}", (edge, 0.5 * (contribution[j + 1]
                                                                    + contribution[j - 1])),
                                xytext=(6, 0), textcoords="offset points", fontsize=8)
        row[0].axhline(1.0, color="k", ls="--", lw=0.8)
        row[0].axhline(-1.0, color="k", ls="--", lw=0.8)
        row[0].set_ylim(-3.5, 3.5)
        row[0].set_ylabel("v = f(u)")
        row[0].legend(fontsize=8, loc="upper left")
        row[1].set_ylim(0, 1.05)
        row[1].set_ylabel("$p(k(u) \\mid f(u))$")
        row[2].set_ylabel("$\\log p(k \\mid f(u)) + \\log|f'(u)|$")
        letters = "abc" if name == "three pieces" else "def"
        row[0].set_title(f"({letters[0]}) {name}: $f$")
        row[1].set_title(f"({letters[1]}) {name}: gating of the active branch")
        row[2].set_title(f"({letters[2]}) {name}: log-likelihood contribution")
    fig.suptitle("Fig. 6: same $P$, $Q$, slopes and $s$; at $u = \\pm 1$ three pieces jump by "
                 "$-\\log P_2$ and $\\log Q_0$ (docs/exercises.md, exercise 4), five pieces are "
                 "continuous", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig06_boundary_conditions.png"), dpi=110)
    plt.close(fig)


def figure_7(plt, out):
    """Fig. 7: w_s(v), w_P(v), w_Q(v) of eq. 31-33."""
    v = np.linspace(-1.0, 1.0, 401)
    w_s, w_p, w_q = interpolation_weights(v)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot(v, w_s, color="tab:green", lw=2,
            label="$w_s(v) = \\frac{1}{2}(1 + \\cos \\pi v)$ (weight of s)")
    ax.plot(v, w_p, color="tab:blue", lw=2,
            label="$w_P(v) = \\frac{1}{2}(1 + \\sin\\frac{\\pi v}{2})$ (weight of log P)")
    ax.plot(v, w_q, color="tab:red", lw=2,
            label="$w_Q(v) = \\frac{1}{2}(1 - \\sin\\frac{\\pi v}{2})$ (weight of log Q)")
    ax.set_xlabel("v")
    ax.set_ylabel("weight")
    ax.set_ylim(0, 1.05)
    # below the axes: inside, the legend covered the top of w_s
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    ax.set_title("Fig. 7: logit weights of the gating (eq. 31-33)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig07_gating_weights.png"), dpi=110)
    plt.close(fig)


#: the density of Fig. 8 (three bumps of different widths on a uniform floor)
def figure_8_density():
    return bump_mixture_density(means=[-0.62, 0.05, 0.7], widths=[0.1, 0.22, 0.07],
                                weights=[0.35, 0.4, 0.25], floor=0.1)


def figure_8(plt, out):
    """Fig. 8: the uniform fold smooths p_X; the posterior gating recovers it."""
    p_x = figure_8_density()
    slopes = uniform_fold_slopes()
    p_z = uniform_fold(p_x)
    x = grid(1201)
    z = grid(601)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    axes[0].plot(x, p_x.pdf(x), color="k")
    axes[0].set_title("(a) $p_X(x)$")
    axes[0].set_xlabel("x")
    v, k, _, _ = three_piece_forward(x, slopes)
    px = p_x.pdf(x)
    for piece, kk in _runs(x, k):
        axes[1].fill_between(x[piece], px[piece], color=BRANCH_COLOURS[kk], alpha=0.4, lw=0)
        axes[1].plot(x[piece], px[piece], color=BRANCH_COLOURS[kk])
    axes[1].set_title("(b) $p_X$ cut at $a = -\\frac{1}{3}$, $b = \\frac{1}{3}$")
    axes[1].set_xlabel("x")
    # p_Z is the sum of the three pieces, each squeezed by 3 and (piece 1) mirrored
    parts = p_x.pdf(fold_preimages(z, slopes)) / 3.0
    axes[2].stackplot(z, parts, colors=BRANCH_COLOURS, alpha=0.4, labels=BRANCH_LABELS)
    axes[2].plot(z, p_z.pdf(z), color="k", label="$p_Z$ (eq. 34)")
    axes[2].axhline(0.5, color="k", ls=":", lw=0.8)
    axes[2].set_title("(c) $p_Z$ after the fold $\\alpha_k = 3$")
    axes[2].set_xlabel("z")
    axes[2].legend(fontsize=7, loc="upper right")
    prob = posterior_gating(p_x, slopes)(z)
    axes[3].stackplot(z, prob.T, colors=BRANCH_COLOURS, alpha=0.6, labels=BRANCH_LABELS)
    axes[3].set_ylim(0, 1)
    axes[3].set_title("(d) exact gating $p(k \\mid z)$, stacked")
    axes[3].set_xlabel("z")
    axes[3].set_ylabel("probability")
    top = max(px.max(), p_z.pdf(z).max()) * 1.08
    for ax in axes[:3]:  # the three densities on one scale
        ax.set_ylim(0, top)
        ax.set_ylabel("density")
    lip_x, lip_z = derivative_sup(p_x).lower, derivative_sup(p_z).lower
    fig.suptitle(f"Fig. 8: $\\|p_X'\\|_\\infty = {lip_x:.2f}$, $\\|p_Z'\\|_\\infty = {lip_z:.2f}$ "
                 f"(ratio {lip_x / lip_z:.1f} $\\geq 3$); "
                 "$p_Z(f(x))\\,p(k\\mid f(x))\\cdot 3 = p_X(x)$",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig08_smoothing.png"), dpi=110)
    plt.close(fig)


def figure_8_theorem(plt, out, n_max=8):
    """Theorem 1: ||p_n'|| <= ||p_0'|| / 3^n and ||p_n - 1/2|| after n uniform folds."""
    p_x = figure_8_density()
    densities = uniform_folds(p_x, n_max)
    z = grid(801)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    cmap = plt.get_cmap("viridis")
    for n, p in enumerate(densities[:5]):
        axes[0].plot(z, p.pdf(z), color=cmap(n / 4), lw=1.6, label=f"$p_{n}$")
    axes[0].axhline(0.5, color="k", ls=":", lw=0.8)
    axes[0].set_xlabel("z")
    axes[0].set_ylabel("$p_n(z)$")
    axes[0].set_title("$p_n$: $n$ uniform folds of $p_X$ (Fig. 8a)")
    # one row above the curves (in a corner, the legend met the peak of p_0)
    axes[0].set_ylim(0, 1.65)
    axes[0].legend(fontsize=8, loc="upper center", ncol=5)
    n = np.arange(n_max + 1)
    # grid values (lower ends of the enclosures; the upper ends differ by < 2%)
    deriv = np.array([derivative_sup(p).lower for p in densities])
    dist = np.array([sup_distance_to_uniform(p).lower for p in densities])
    bound = derivative_sup(p_x).upper / 3.0**n
    axes[1].semilogy(n, deriv, "o-", color="tab:blue", label="$\\|p_n'\\|_\\infty$")
    axes[1].semilogy(n, bound, "--", color="tab:blue",
                     label="$\\|p_0'\\|_\\infty / 3^n$ (eq. 34-36)")
    axes[1].semilogy(n, dist, "s-", color="tab:red", label="$\\|p_n - \\frac{1}{2}\\|_\\infty$")
    axes[1].semilogy(n, 2 * bound, ":", color="tab:red",
                     label="$2\\|p_0'\\|_\\infty / 3^n$ (bound of eq. 37)")
    for eps in (0.1, 0.01):
        needed = folds_needed(eps, derivative_sup(p_x).upper)
        axes[1].axhline(eps, color="0.6", lw=0.6)
        # in the right margin, beside its line (inside, the curves crossed it)
        axes[1].annotate(f"$\\epsilon = {eps}$: $N = {needed}$ (eq. 35)", (1.0, eps),
                         xycoords=("axes fraction", "data"), xytext=(4, 0),
                         textcoords="offset points", va="center", fontsize=8, color="0.3")
    axes[1].set_xlabel("number of folds n")
    axes[1].set_ylabel("sup norm")
    axes[1].set_title("Theorem 1: measured values against the bounds")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig08_theorem1.png"), dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs",
                                                      "figures"))
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    plt = _pyplot()
    for make in (figure_2, figure_4, figure_5, figure_6, figure_7, figure_8, figure_8_theorem):
        make(plt, args.out)
    print(f"wrote fig02, fig04, fig05, fig06, fig07, fig08 (x2) PNGs to "
          f"{os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
