//! PE-lang's projector (`mlp_projector(..)` in the catalogue): linear layers from the
//! vision tower's token width to the decoder's, exact (erf) GELU between them (not after
//! the last), every layer with a bias. Weights normal std fan_in^-0.5, biases zero. The
//! parameter count is the planner's (`cost::projector_params`).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use pexc_compiler::lower::plan::Ctor;

use super::kernels::gelu;
use super::layers::{linear, linear_flat};

/// The projector's sizes, read from the plan's `mlp_projector(..)` and the width of the
/// vision tokens it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectorConfig {
    pub input: usize,
    pub layers: usize,
    pub out: usize,
}

impl ProjectorConfig {
    pub fn from_plan(c: &Ctor, input_width: usize) -> Result<Self, String> {
        if c.ctor != "mlp_projector" {
            return Err(format!("`{}` is not a projector", c.ctor));
        }
        if input_width == 0 {
            return Err("`mlp_projector`: the vision tokens it reads have width 0".into());
        }
        let layers = match c.int("layers") {
            None => 2,
            Some(v) if v > 0 => v as usize,
            Some(v) => {
                return Err(format!(
                    "`mlp_projector`: `layers` must be positive, found {v}"
                ))
            }
        };
        let out = match c.int("out") {
            Some(v) if v > 0 => v as usize,
            Some(v) => {
                return Err(format!(
                    "`mlp_projector`: `out` must be positive, found {v}"
                ))
            }
            None => return Err("`mlp_projector`: `out` is missing from the plan".into()),
        };
        Ok(ProjectorConfig {
            input: input_width,
            layers,
            out,
        })
    }
}

#[derive(Module, Debug)]
pub struct MlpProjector<B: Backend> {
    /// (input, out), then (out, out) for the rest.
    pub layers: Vec<Linear<B>>,
}

impl<B: Backend> MlpProjector<B> {
    pub fn new(c: &ProjectorConfig, device: &B::Device) -> Self {
        MlpProjector {
            layers: (0..c.layers)
                .map(|i| {
                    let fan_in = if i == 0 { c.input } else { c.out };
                    linear(fan_in, c.out, (fan_in as f64).powf(-0.5), device)
                })
                .collect(),
        }
    }

    /// (.., input) -> (.., out)
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let last = self.layers.len().saturating_sub(1);
        self.layers.iter().enumerate().fold(x, |x, (i, layer)| {
            let y = linear_flat(layer, x);
            if i < last {
                gelu(y)
            } else {
                y
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::module::Param;
    use burn::tensor::TensorData;
    use pexc_compiler::lower::cost;
    use pexc_compiler::lower::plan::Arg;

    type B = Flex;

    fn ctor(layers: Option<i64>, out: i64) -> Ctor {
        let mut args = vec![("out".to_string(), Arg::Int(out))];
        if let Some(l) = layers {
            args.push(("layers".to_string(), Arg::Int(l)));
        }
        Ctor {
            ctor: "mlp_projector".into(),
            args: args.into_iter().collect(),
        }
    }

    fn t2(rows: &[&[f32]]) -> Tensor<B, 2> {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(
            TensorData::new(flat, [rows.len(), rows[0].len()]),
            &Default::default(),
        )
    }

    #[test]
    fn param_count_matches_the_planner() {
        for layers in [1, 2, 3] {
            let c = ctor(Some(layers), 12);
            let cfg = ProjectorConfig::from_plan(&c, 20).unwrap();
            let m = MlpProjector::<B>::new(&cfg, &Default::default());
            assert_eq!(
                m.num_params() as u64,
                cost::projector_params(&c, 20),
                "{layers} layers"
            );
        }
    }

    #[test]
    fn from_plan_defaults_and_errors() {
        let cfg = ProjectorConfig::from_plan(&ctor(None, 8), 4).unwrap();
        assert_eq!(
            cfg,
            ProjectorConfig {
                input: 4,
                layers: 2,
                out: 8
            }
        );
        assert!(ProjectorConfig::from_plan(&ctor(Some(0), 8), 4).is_err());
        assert!(ProjectorConfig::from_plan(&ctor(None, -1), 4).is_err());
        assert!(ProjectorConfig::from_plan(&ctor(None, 8), 0).is_err());
    }

    #[test]
    fn two_layers_match_a_hand_computed_value() {
        let device = Default::default();
        let cfg = ProjectorConfig::from_plan(&ctor(Some(2), 2), 2).unwrap();
        let mut m = MlpProjector::<B>::new(&cfg, &device);
        // Layer 1: h = x @ [[1, 0], [0, -1]] + [0, 0]; for x = (1, 1), h = (1, -1).
        m.layers[0].weight = Param::from_tensor(t2(&[&[1.0, 0.0], &[0.0, -1.0]]));
        // Layer 2: y = gelu(h) @ [[2, 1], [0, 3]] + [0.5, -0.5].
        m.layers[1].weight = Param::from_tensor(t2(&[&[2.0, 1.0], &[0.0, 3.0]]));
        m.layers[1].bias = Some(Param::from_tensor(Tensor::from_floats(
            [0.5, -0.5],
            &device,
        )));
        // Exact GELU: gelu(1) = 0.5 (1 + erf(1 / sqrt 2)), gelu(-1) = -0.5 (1 - erf(..)).
        let (g1, gm1) = (0.841_344_746_068_542_9_f64, -0.158_655_253_931_457_07_f64);
        let want = [2.0 * g1 + 0.5, g1 + 3.0 * gm1 - 0.5];
        let got = m
            .forward(t2(&[&[1.0, 1.0]]))
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        // Any rank: (n, t, input) -> (n, t, out).
        let x3 = Tensor::<B, 3>::ones([2, 5, 2], &device);
        assert_eq!(m.forward(x3).dims(), [2, 5, 2]);
    }
}
