# Lion-K (Chen, Liu, Liang & Liu 2023, "Lion Secretly Solves Constrained Optimization: As Lyapunov
# Predicts") with a Huber-type K: K(x) = 10 sum huber_{0.1}(x), so grad K(x) = clip(10 x, 1): Lion's
# b1 0.9, b2 0.99 and weight decay 1e-3 (added before the lr scaling); c = 0.1 g + 0.9 m,
# update = lr (clip(10 c, -1, 1) + 1e-3 w), m = 0.01 g + 0.99 m. Coordinates of c above 0.1 take Lion's unit
# step, smaller ones a step linear in c (with a scale of 1000, as for lion_tanh, the clip would equal sign on
# every gradient above 1e-3: Lion itself, same functional fingerprint).
def lion_clip(g, w, m, lr, t):
    c = interp(g, m, 0.9)
    m = interp(g, m, 0.99)
    u = clip(10.0 * c, 1.0) + 0.001 * w
    update = lr * u
    return update, m
