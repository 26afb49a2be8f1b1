# diffGrad (Dubey et al. 2019): Adam (b1 0.9, b2 0.999, eps 1e-8) whose bias-corrected m is scaled by
# the friction xi = sigmoid(|p - g|), p the previous gradient (0 at step 1), kept by `p = g`.
def diffgrad(g, w, m, v, p, lr, t):
    m = interp(g, m, 0.9)
    v = interp(square(g), v, 0.999)
    xi = 1.0 / (1.0 + exp(-abs(p - g)))
    p = g
    mh = m / (1.0 - pow(0.9, t))
    vh = v / (1.0 - pow(0.999, t))
    u = xi * mh / (sqrt(vh) + 1e-08)
    update = lr * u
    return update, m, v, p
