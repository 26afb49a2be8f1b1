# NAdamW (Dozat 2016, "Incorporating Nesterov Momentum into Adam"; decoupled decay as in AdamW) as
# optax.nadamw(lr): b1 0.9, b2 0.999, eps 1e-8, weight decay 1e-4. Nesterov's look-ahead: m-hat mixes the new m,
# debiased one step ahead, with the current gradient (optax.scale_by_adam(nesterov=True)).
def nadamw(g, w, m, v, lr, t):
    m = interp(g, m, 0.9)
    v = interp(square(g), v, 0.999)
    mh = 0.9 * m / (1.0 - pow(0.9, t + 1.0)) + 0.1 * g / (1.0 - pow(0.9, t))
    vh = v / (1.0 - pow(0.999, t))
    u = mh / (sqrt(vh) + 1e-08)
    u = u + 0.0001 * w
    update = lr * u
    return update, m, v
