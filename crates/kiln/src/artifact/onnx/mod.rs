//! ONNX export of a classifier (`kiln export MODEL --format onnx`): the graph takes the
//! float32 samples `kiln predict` reads (raw pixel values, say) with the model's
//! normalization inside, and gives `probabilities` (what `kiln predict` prints, except that
//! a model trained `from_logits` gets the softmax, or sigmoid, of the logits it prints) and
//! `class` (the predicted class's index; the names are in the metadata as `kiln.classes`).
//! Int8 models become QDQ graphs (ONNX rounds ties to even where kiln rounds them up, so a
//! value exactly halfway between two codes may take the other one). Written with ONNX opset 17 and IR version 8, which ONNX
//! Runtime has run since 1.13.

mod graph;
mod layers;
mod quantized;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use graph::{int, GraphBuilder};
use layers::{Flow, LayerEmitter, Layout};
use quantized::QuantizedKernel;

use super::{Classifier, ModelInfo};
use crate::data::FittedNormalization;
use crate::error::{Error, Result};
use crate::io::proto::onnx::{
    data_type, Dimension, DimensionValue, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};
use crate::io::proto::Message;
use crate::nn::Activation;

/// The ONNX operator set the graph is written against.
pub const OPSET: i64 = 17;
/// ONNX IR version 8 goes with opset 17 (ONNX 1.12).
const IR_VERSION: i64 = 8;

/// The model as an ONNX file's bytes.
pub fn to_onnx(model: &Classifier, info: &ModelInfo) -> Result<Vec<u8>> {
    check_exportable(model, info)?;
    let float = model.float();
    let mut g = GraphBuilder::default();
    let kernels = match model.quantized() {
        Some(q) => quantized_kernels(q),
        None => HashMap::new(),
    };
    let input_shape = float.input_shape();
    let x = Flow {
        name: preprocess(&mut g, "input", &info.preprocessing, input_shape.dims()),
        layout: Layout::Kiln,
        shape: input_shape,
    };
    let mut emitter = LayerEmitter {
        g: &mut g,
        model: float,
        kernels,
    };
    let mut y = emitter.emit_all(x)?;
    let from_logits = info.training.as_ref().is_some_and(|t| t.from_logits);
    let width = y.shape.numel();
    if from_logits {
        // A model trained on logits: its probabilities, as `kiln eval` reads them.
        let last = if width == 1 {
            Activation::Sigmoid
        } else {
            Activation::Softmax
        };
        y = emitter.activate(last, y)?;
    }
    g.op_into("Identity", &[&y.name], vec![], "probabilities");
    let mut outputs = vec![tensor_value("probabilities", data_type::FLOAT, y.shape.dims())];
    if y.shape.rank() == 1 {
        predicted_class(&mut g, width);
        outputs.push(tensor_value("class", data_type::INT64, &[]));
    }
    let graph = GraphProto {
        node: g.nodes,
        // The checker refuses an unnamed graph.
        name: match info.name.is_empty() {
            true => "kiln".into(),
            false => info.name.clone(),
        },
        initializer: g.initializers,
        doc_string: String::new(),
        input: vec![tensor_value("input", data_type::FLOAT, input_shape.dims())],
        output: outputs,
    };
    let model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "kiln".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: describe(info, model),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: metadata(info, model)?,
    };
    Ok(model.encode_to_vec())
}

/// [`to_onnx`] written to `path` atomically.
pub fn save_onnx(model: &Classifier, info: &ModelInfo, path: &Path) -> Result<()> {
    let bytes = to_onnx(model, info)?;
    crate::io::write_atomically(path, &bytes)
}

fn check_exportable(model: &Classifier, info: &ModelInfo) -> Result<()> {
    if let Some(e) = model.ensemble() {
        return Err(Error::unsupported(
            "ONNX export",
            format!(
                "the model is an ensemble of {} members; export a single model",
                e.members().len()
            ),
        ));
    }
    if info.table.is_some() {
        return Err(Error::unsupported(
            "ONNX export",
            "the model reads CSV table rows, whose column encoding (categories, gaps, outliers) has no ONNX form in kiln yet; models on images or feature vectors export",
        ));
    }
    Ok(())
}

/// Per quantized layer index, its codes, scales and input mapping.
fn quantized_kernels(q: &crate::quant::QuantizedModel) -> HashMap<usize, QuantizedKernel<'_>> {
    let network = q.network();
    let inputs: HashMap<usize, _> = network.compression.inputs.iter().copied().collect();
    network
        .kernels()
        .map(|(layer, codes, scales)| {
            let input = inputs.get(&layer).copied().flatten();
            (layer, QuantizedKernel { codes, scales, input })
        })
        .collect()
}

/// The normalization a model was trained with, on the graph's raw input.
fn preprocess(
    g: &mut GraphBuilder,
    input: &str,
    normalization: &FittedNormalization,
    dims: &[usize],
) -> String {
    let (shift, divisor) = match normalization {
        FittedNormalization::None => return input.to_string(),
        FittedNormalization::Scale { max } => {
            let max = g.floats("scale_max", &[], &[*max]);
            return g.op("Div", &[input, &max], vec![]);
        }
        FittedNormalization::ZScore { mean, std } => (mean, std),
        FittedNormalization::MinMax { min, range } => (min, range),
    };
    // (x − shift) / divisor per feature, in kiln's order of operations.
    let shift = g.floats("norm_shift", dims, shift);
    let divisor = g.floats("norm_divisor", dims, divisor);
    let centred = g.op("Sub", &[input, &shift], vec![]);
    g.op("Div", &[&centred, &divisor], vec![])
}

/// `class`: the largest probability's index, or for one output unit class 1 where its
/// probability is above ½ (as `kiln predict` and `kiln eval` decide).
fn predicted_class(g: &mut GraphBuilder, width: usize) {
    if width == 1 {
        let half = g.floats("half", &[], &[0.5]);
        let above = g.op("Greater", &["probabilities", &half], vec![]);
        let one_per_sample = g.int64s("batch", &[-1]);
        let class = g.op("Reshape", &[&above, &one_per_sample], vec![]);
        g.op_into(
            "Cast",
            &[&class],
            vec![int("to", data_type::INT64 as i64)],
            "class",
        );
    } else {
        let attributes = vec![int("axis", 1), int("keepdims", 0)];
        g.op_into("ArgMax", &["probabilities"], attributes, "class");
    }
}

/// A graph input or output: a tensor of `elem_type` shaped (batch, …dims).
fn tensor_value(name: &str, elem_type: i32, dims: &[usize]) -> ValueInfoProto {
    let batch = Dimension {
        value: Some(DimensionValue::DimParam("batch".into())),
    };
    let rest = dims.iter().map(|&d| Dimension {
        value: Some(DimensionValue::DimValue(d as i64)),
    });
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: std::iter::once(batch).chain(rest).collect(),
                }),
            }),
        }),
        doc_string: String::new(),
    }
}

fn describe(info: &ModelInfo, model: &Classifier) -> String {
    let kind = match model.quantized() {
        Some(q) => format!("int8 ({:?}) ", q.mode()).to_lowercase(),
        None => String::new(),
    };
    format!(
        "kiln {kind}model `{}`. Input: float32 samples as `kiln predict` reads them (the model's normalization is inside the graph). Outputs: `probabilities`; `class`, an index into the metadata's `kiln.classes`.",
        info.name
    )
}

/// `kiln.name`, `kiln.classes`, `kiln.preprocessing` and, for an int8 model,
/// `kiln.compression`, as JSON like the model file's own metadata.
fn metadata(info: &ModelInfo, model: &Classifier) -> Result<Vec<StringStringEntryProto>> {
    let mut entries = BTreeMap::new();
    entries.insert("kiln.name", info.name.clone());
    entries.insert("kiln.classes", json(&info.classes)?);
    entries.insert("kiln.preprocessing", json(&info.preprocessing)?);
    if let Some(q) = model.quantized() {
        entries.insert("kiln.compression", json(&q.network().compression)?);
    }
    Ok(entries
        .into_iter()
        .map(|(key, value)| StringStringEntryProto {
            key: key.into(),
            value,
        })
        .collect())
}

fn json(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::unsupported("ONNX metadata", e.to_string()))
}
