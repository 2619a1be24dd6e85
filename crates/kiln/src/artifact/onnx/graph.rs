//! Building an ONNX graph: unique value names, nodes with their attributes, and constant
//! tensors stored as initializers.

use crate::io::proto::onnx::{attribute_type, data_type, AttributeProto, NodeProto, TensorProto};

/// The nodes and initializers of a graph under construction, in topological order (each
/// node is added after the nodes making its inputs).
#[derive(Default)]
pub(super) struct GraphBuilder {
    pub(super) nodes: Vec<NodeProto>,
    pub(super) initializers: Vec<TensorProto>,
    names: usize,
}

impl GraphBuilder {
    /// A value name not used before, readable in Netron: `hint_N`.
    pub(super) fn fresh(&mut self, hint: &str) -> String {
        self.names += 1;
        format!("{hint}_{}", self.names)
    }

    fn tensor(&mut self, hint: &str, dims: &[usize], data_type: i32, raw_data: Vec<u8>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type,
            name: name.clone(),
            raw_data,
        });
        name
    }

    /// A float32 constant of shape `dims` (`[]` for a scalar).
    pub(super) fn floats(&mut self, hint: &str, dims: &[usize], values: &[f32]) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), values.len());
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(hint, dims, data_type::FLOAT, raw)
    }

    /// An int64 constant (shapes, axes).
    pub(super) fn int64s(&mut self, hint: &str, values: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(hint, &[values.len()], data_type::INT64, raw)
    }

    /// An int8 constant (quantized weights).
    pub(super) fn int8s(&mut self, hint: &str, dims: &[usize], values: &[i8]) -> String {
        let raw = values.iter().map(|&v| v as u8).collect();
        self.tensor(hint, dims, data_type::INT8, raw)
    }

    /// `n` int8 zeros: a symmetric kernel's per-column zero points.
    pub(super) fn tensor_of_zeros_i8(&mut self, n: usize) -> String {
        self.int8s("kernel_zero_point", &[n], &vec![0; n])
    }

    /// A uint8 constant (activation zero points).
    pub(super) fn uint8s(&mut self, hint: &str, dims: &[usize], values: &[u8]) -> String {
        self.tensor(hint, dims, data_type::UINT8, values.to_vec())
    }

    /// Adds a node with one output, named after the operator; returns the output's name.
    pub(super) fn op(&mut self, op_type: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let output = self.fresh(&op_type.to_lowercase());
        self.op_into(op_type, inputs, attribute, &output);
        output
    }

    /// Adds a node writing the value `output` (a graph output's name, say).
    pub(super) fn op_into(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
        output: &str,
    ) {
        let name = self.fresh(op_type);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name,
            op_type: op_type.into(),
            attribute,
            doc_string: String::new(),
        });
    }
}

pub(super) fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: Some(value),
        r#type: attribute_type::INT,
        ..Default::default()
    }
}

pub(super) fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: attribute_type::INTS,
        ..Default::default()
    }
}

pub(super) fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f: Some(value),
        r#type: attribute_type::FLOAT,
        ..Default::default()
    }
}
