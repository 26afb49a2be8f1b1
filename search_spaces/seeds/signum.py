# Signum (Bernstein et al. 2018, signSGD with momentum): m = 0.1 g + 0.9 m, update = lr sign(m).
def signum(g, w, m, lr, t):
    m = interp(g, m, 0.9)
    update = lr * sign(m)
    return update, m
