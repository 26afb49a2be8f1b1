# Sophia-style (Liu et al. 2023) with a Hessian estimate h every step: b1 0.965, b2 0.99, gamma 0.01,
# eps 1e-12, clip 1, decoupled weight decay 1e-4: update = lr (clip(m / max(0.01 v, 1e-12), 1) + 1e-4 w).
def sophia(g, w, h, m, v, lr, t):
    m = interp(g, m, 0.965)
    v = interp(h, v, 0.99)
    r = m / max(0.01 * v, 1e-12)
    u = clip(r, 1.0) + 0.0001 * w
    update = lr * u
    return update, m, v
