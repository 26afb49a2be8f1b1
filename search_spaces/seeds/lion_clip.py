# Lion-K (Chen, Liu, Liang & Liu 2023, "Lion Secretly Solves Constrained Optimization: As Lyapunov
# Predicts") with a Huber-type K: K(x) = 1000 sum huber_{1e-3}(x), so grad K(x) = clip(1000 x, 1): Lion's
# b1 0.9, b2 0.99 and weight decay 1e-3 (added before the lr scaling); c = 0.1 g + 0.9 m,
# update = lr (clip(1000 c, -1, 1) + 1e-3 w), m = 0.01 g + 0.99 m.
def lion_clip(g, w, m, lr, t):
    c = interp(g, m, 0.9)
    m = interp(g, m, 0.99)
    u = clip(1000.0 * c, 1.0) + 0.001 * w
    update = lr * u
    return update, m
