# Lion-K (Chen, Liu, Liang & Liu 2023, "Lion Secretly Solves Constrained Optimization: As Lyapunov
# Predicts") with K = the l2 norm of each tensor, so grad K(c) = c / ||c|| per tensor (0 where c = 0):
# Lion's b1 0.9, b2 0.99 and weight decay 1e-3 (added before the lr scaling); c = 0.1 g + 0.9 m,
# update = lr (c / ||c|| + 1e-3 w), m = 0.01 g + 0.99 m.
def lion_l2(g, w, m, lr, t):
    c = interp(g, m, 0.9)
    m = interp(g, m, 0.99)
    u = c / norm(c) + 0.001 * w
    update = lr * u
    return update, m
