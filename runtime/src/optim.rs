//! Optimizers: LAMB (burn has none) and AdamW with PyTorch's conventions, over any module,
//! with state keyed by parameter path (so a checkpoint restores it whatever the parameter
//! ids), weight decay excluded from norms, biases, vectors and the logit scale, and
//! global-norm gradient clipping (burn clips per parameter; CLIP trainers clip the norm
//! over all parameters).

use std::collections::HashMap;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use pexc_compiler::lower::plan::Ctor;

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Adam with decoupled weight decay (Loshchilov & Hutter), bias-corrected moments.
    AdamW,
    /// LAMB (You et al.): the bias-corrected Adam direction plus weight decay, scaled per
    /// parameter tensor by the trust ratio ||w|| / ||update||.
    Lamb,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OptimConfig {
    pub rule: Rule,
    pub betas: (f64, f64),
    pub weight_decay: f64,
    pub eps: f64,
}

impl OptimConfig {
    /// From the plan's `adamw(..)` or `lamb(..)`.
    pub fn from_plan(c: &Ctor) -> Result<Self, String> {
        let rule = match c.ctor.as_str() {
            "adamw" => Rule::AdamW,
            "lamb" => Rule::Lamb,
            other => return Err(format!("`{other}` is not an optimizer this runtime knows")),
        };
        Ok(OptimConfig {
            rule,
            betas: c.pair("betas").unwrap_or((0.9, 0.999)),
            weight_decay: c.float("weight_decay").unwrap_or(0.0),
            eps: c.float("eps").unwrap_or(1e-8),
        })
    }
}

/// Whether a parameter takes weight decay: matrices and convolution kernels do; norms,
/// biases, vectors (class token, probe, layer scale) and the logit scale do not.
pub fn decays(path: &str, dims: usize) -> bool {
    dims >= 2 && !path.contains("logit_scale") && !path.ends_with("bias")
}

/// Moments of one parameter, flattened.
#[derive(Clone)]
pub struct Moments<B: Backend> {
    pub m: Tensor<B, 1>,
    pub v: Tensor<B, 1>,
    pub steps: u64,
}

/// An optimizer's state across steps and phases.
pub struct Optimizer<B: AutodiffBackend> {
    pub config: OptimConfig,
    pub state: HashMap<String, Moments<B::InnerBackend>>,
}

impl<B: AutodiffBackend> Optimizer<B> {
    pub fn new(config: OptimConfig) -> Self {
        Optimizer {
            config,
            state: HashMap::new(),
        }
    }

    /// A phase may change the optimizer: the same rule keeps its moments (state carries
    /// over, language.md section 2); a different rule starts afresh.
    pub fn reconfigure(&mut self, config: OptimConfig) {
        if config.rule != self.config.rule {
            self.state.clear();
        }
        self.config = config;
    }

    /// One update of every parameter of `module` that has a gradient in `grads`, with the
    /// gradients scaled by `grad_scale` (global-norm clipping) first.
    pub fn step<M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        module: M,
        grads: &mut GradientsParams,
        grad_scale: f64,
    ) -> M {
        let mut mapper = StepMapper::<B> {
            config: &self.config,
            state: &mut self.state,
            grads,
            lr,
            grad_scale,
            path: Vec::new(),
        };
        module.map(&mut mapper)
    }
}

struct StepMapper<'a, B: AutodiffBackend> {
    config: &'a OptimConfig,
    state: &'a mut HashMap<String, Moments<B::InnerBackend>>,
    grads: &'a mut GradientsParams,
    lr: f64,
    grad_scale: f64,
    path: Vec<String>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for StepMapper<'_, B> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let path = self.path.join(".");
        let require_grad = tensor.is_require_grad();
        let w = tensor.inner();
        let shape = w.shape();
        let n = shape.num_elements();
        let g = grad.reshape([n]).mul_scalar(self.grad_scale);
        let w1 = w.reshape([n]);
        let wd = if decays(&path, D) {
            self.config.weight_decay
        } else {
            0.0
        };
        let new = update(self.config, self.state.remove(&path), w1, g, self.lr, wd);
        let (w1, moments) = new;
        self.state.insert(path, moments);
        let mut t = Tensor::from_inner(w1.reshape(shape));
        if require_grad {
            t = t.require_grad();
        }
        Param::from_mapped_value(id, t, mapper)
    }
}

/// One step on a flattened parameter: returns the new value and moments.
pub fn update<B: Backend>(
    config: &OptimConfig,
    state: Option<Moments<B>>,
    w: Tensor<B, 1>,
    g: Tensor<B, 1>,
    lr: f64,
    weight_decay: f64,
) -> (Tensor<B, 1>, Moments<B>) {
    let (b1, b2) = config.betas;
    let moments = match state {
        Some(s) => Moments {
            m: s.m.mul_scalar(b1).add(g.clone().mul_scalar(1.0 - b1)),
            v: s.v.mul_scalar(b2).add(g.square().mul_scalar(1.0 - b2)),
            steps: s.steps + 1,
        },
        None => Moments {
            m: g.clone().mul_scalar(1.0 - b1),
            v: g.square().mul_scalar(1.0 - b2),
            steps: 1,
        },
    };
    let t = moments.steps as i32;
    let c1 = 1.0 - b1.powi(t);
    let c2 = 1.0 - b2.powi(t);
    // m^ / (sqrt(v^) + eps), as PyTorch: eps added after the square root.
    let direction = moments.m.clone().div_scalar(c1).div(
        moments
            .v
            .clone()
            .div_scalar(c2)
            .sqrt()
            .add_scalar(config.eps),
    );
    let w_new = match config.rule {
        Rule::AdamW => w
            .clone()
            .mul_scalar(1.0 - lr * weight_decay)
            .sub(direction.mul_scalar(lr)),
        Rule::Lamb => {
            let u = if weight_decay > 0.0 {
                direction.add(w.clone().mul_scalar(weight_decay))
            } else {
                direction
            };
            // Trust ratio ||w|| / ||u||, 1 where either norm is zero.
            let w_norm = w.clone().square().sum().sqrt();
            let u_norm = u.clone().square().sum().sqrt();
            let both = w_norm
                .clone()
                .greater_elem(0.0)
                .bool_and(u_norm.clone().greater_elem(0.0));
            let ratio = w_norm
                .div(u_norm.clamp_min(1e-30))
                .mask_fill(both.bool_not(), 1.0);
            w.sub(u.mul(ratio.unsqueeze::<1>()).mul_scalar(lr))
        }
    };
    (w_new, moments)
}

/// The global L2 norm of the gradients of `module`'s parameters.
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    struct Norm<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        sum: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Norm<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let s = g.square().sum();
                self.sum = Some(match self.sum.take() {
                    Some(acc) => acc.add(s),
                    None => s,
                });
            }
        }
    }
    let mut v = Norm::<B> { grads, sum: None };
    module.visit(&mut v);
    v.sum
        .map(|s| f64::from(s.into_scalar().elem::<f32>()).sqrt())
        .unwrap_or(0.0)
}

use burn::tensor::ElementConversion;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    fn v(xs: &[f32]) -> Tensor<B, 1> {
        Tensor::from_floats(xs, &Default::default())
    }

    fn values(t: Tensor<B, 1>) -> Vec<f64> {
        t.into_data()
            .to_vec::<f32>()
            .unwrap_or_default()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    /// The first two steps of LAMB, by hand in f64.
    #[test]
    fn lamb_matches_a_hand_computed_step() {
        let cfg = OptimConfig {
            rule: Rule::Lamb,
            betas: (0.9, 0.999),
            weight_decay: 0.01,
            eps: 1e-6,
        };
        let (w0, g0, g1) = ([1.0f64, 2.0], [0.5f64, -1.0], [0.25f64, 0.5]);
        let lr = 0.1;
        let (w1, s) = update::<B>(&cfg, None, v(&[1.0, 2.0]), v(&[0.5, -1.0]), lr, 0.01);
        let (w2, _) = update::<B>(&cfg, Some(s), w1.clone(), v(&[0.25, 0.5]), lr, 0.01);

        let mut m = [0.0; 2];
        let mut vv = [0.0; 2];
        let mut w = w0;
        let mut want = Vec::new();
        for (t, g) in [g0, g1].iter().enumerate() {
            let t = (t + 1) as i32;
            let mut u = [0.0; 2];
            for i in 0..2 {
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                vv[i] = 0.999 * vv[i] + 0.001 * g[i] * g[i];
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = vv[i] / (1.0 - 0.999f64.powi(t));
                u[i] = mh / (vh.sqrt() + 1e-6) + 0.01 * w[i];
            }
            let wn = (w[0] * w[0] + w[1] * w[1]).sqrt();
            let un = (u[0] * u[0] + u[1] * u[1]).sqrt();
            let r = wn / un;
            for i in 0..2 {
                w[i] -= lr * r * u[i];
            }
            want.push(w);
        }
        for (got, want) in [(values(w1), want[0]), (values(w2), want[1])] {
            for i in 0..2 {
                assert!((got[i] - want[i]).abs() < 1e-5, "{got:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn adamw_matches_pytorch_formula() {
        let cfg = OptimConfig {
            rule: Rule::AdamW,
            betas: (0.9, 0.95),
            weight_decay: 0.05,
            eps: 1e-8,
        };
        let (w1, _) = update::<B>(&cfg, None, v(&[1.0, -2.0]), v(&[0.1, 0.2]), 0.01, 0.05);
        // Step 1: m^ = g, v^ = g^2, so the direction is sign(g) (up to eps).
        let want = [
            1.0 * (1.0 - 0.01 * 0.05) - 0.01,
            -2.0 * (1.0 - 0.01 * 0.05) - 0.01,
        ];
        let got = values(w1);
        for i in 0..2 {
            assert!((got[i] - want[i]).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn lamb_trust_ratio_is_one_for_a_zero_weight() {
        let cfg = OptimConfig {
            rule: Rule::Lamb,
            betas: (0.9, 0.999),
            weight_decay: 0.0,
            eps: 1e-6,
        };
        let (w1, _) = update::<B>(&cfg, None, v(&[0.0, 0.0]), v(&[1.0, -1.0]), 0.5, 0.0);
        let got = values(w1);
        assert!(
            (got[0] + 0.5).abs() < 1e-5 && (got[1] - 0.5).abs() < 1e-5,
            "{got:?}"
        );
    }

    #[test]
    fn decay_skips_norms_biases_vectors_and_the_logit_scale() {
        assert!(decays("vision.blocks.0.attn.in_proj.weight", 2));
        assert!(!decays("vision.blocks.0.attn.in_proj.bias", 1));
        assert!(!decays("vision.ln_pre.gamma", 1));
        assert!(!decays("logit_scale", 1));
        assert!(!decays("vision.class_embedding", 1));
    }
}
