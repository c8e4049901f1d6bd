// unary.glsl - the elementwise functions of hv_exp ... hv_gelu and their derivatives, as the CPU
// reference (humanvit.h, hv__unary_f / hv__unary_df). Op codes follow humanvit.h's enum:
// EXP LOG SQRT TANH SIGMOID RELU LEAKY_RELU GELU SCALE ADD_SCALAR.

// erf in float: Norbert Juffa's minimax approximation (max error ~1 ulp; 6e-8 absolute, checked
// against double erf on [-10, 10] in steps of 1e-5). fma keeps it as accurate as the C erff.
float hv_erf(float a) {
    float t = abs(a), s = a * a, r, u;
    if (t > 0.927734375) {
        r = fma(-1.72853470e-5, t, 3.83197126e-4);
        u = fma(-3.88396438e-3, t, 2.42546219e-2);
        r = fma(r, s, u);
        r = fma(r, t, -1.06777877e-1);
        r = fma(r, t, -6.34846687e-1);
        r = fma(r, t, -1.28717512e-1);
        r = fma(r, t, -t);
        r = 1.0 - exp(r);
        return a < 0.0 ? -r : r;
    }
    r = -5.96761703e-4;
    r = fma(r, s, 4.99119423e-3);
    r = fma(r, s, -2.67681349e-2);
    r = fma(r, s, 1.12819925e-1);
    r = fma(r, s, -3.76125336e-1);
    r = fma(r, s, 1.28379166e-1);
    return fma(r, a, a);
}

// tanh without overflow for large |x| (GLSL's tanh may compute exp(2x) / ...)
float hv_tanh(float x) {
    float e = exp(-2.0 * abs(x));
    float r = (1.0 - e) / (1.0 + e);
    return x < 0.0 ? -r : r;
}

float hv_unary_f(int op, float alpha, float x) {
    switch (op) {
    case 0: return exp(x);
    case 1: return log(x);
    case 2: return sqrt(x);
    case 3: return hv_tanh(x);
    case 4: return 1.0 / (1.0 + exp(-x));
    case 5: return x > 0.0 ? x : 0.0;
    case 6: return x > 0.0 ? x : alpha * x;
    case 7: return 0.5 * x * (1.0 + hv_erf(x * 0.70710678118654752));
    case 8: return alpha * x;
    default: return x + alpha;
    }
}
// d op(x) / dx from x and y = op(x)
float hv_unary_df(int op, float alpha, float x, float y) {
    switch (op) {
    case 0: return y;
    case 1: return 1.0 / x;
    case 2: return 0.5 / y;
    case 3: return 1.0 - y * y;
    case 4: return y * (1.0 - y);
    case 5: return x > 0.0 ? 1.0 : 0.0;
    case 6: return x > 0.0 ? 1.0 : alpha;
    case 7: return 0.5 * (1.0 + hv_erf(x * 0.70710678118654752)) + x * 0.39894228040143268 * exp(-0.5 * x * x);
    case 8: return alpha;
    default: return 1.0;
    }
}
