# Lion-K (Chen, Liu, Liang & Liu 2023, "Lion Secretly Solves Constrained Optimization: As Lyapunov
# Predicts") with K(x) = sum log(cosh(1000 x)) / 1000, so grad K(x) = tanh(1000 x): Lion's b1 0.9, b2 0.99
# and weight decay 1e-3 (added before the lr scaling); c = 0.1 g + 0.9 m, update = lr (tanh(1000 c) + 1e-3 w),
# m = 0.01 g + 0.99 m. Coordinates of c above ~1e-3 take Lion's unit step, smaller ones a step linear in c.
def lion_tanh(g, w, m, lr, t):
    c = interp(g, m, 0.9)
    m = interp(g, m, 0.99)
    u = tanh(1000.0 * c) + 0.001 * w
    update = lr * u
    return update, m
