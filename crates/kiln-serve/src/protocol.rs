//! Request and response bodies of the two protocols, and the checks that turn a request
//! into `rows` samples of finite f32 values the model can take.
//!
//! Inputs are raw values, as in the files the model was trained on (MNIST pixels 0-255,
//! CSV features); the compute thread applies the model's fitted normalization, exactly as
//! `kiln predict` does, so both give the same answers for the same values.

use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::binary::{self, BinaryData};
use crate::error::ApiError;
use crate::models::{Signature, TableInput};

/// The one input every kiln model has, as named in its v2 metadata.
pub const INPUT_NAME: &str = "input";
pub const PROBABILITIES: &str = "probabilities";
pub const CLASS: &str = "class";

/// Samples ready for the compute threads.
#[derive(Debug, PartialEq)]
pub struct Samples {
    pub values: Vec<f32>,
    pub rows: usize,
}

#[derive(Deserialize)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<InferInput>,
    pub outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    pub parameters: RequestParameters,
}

#[derive(Deserialize, Default)]
pub struct RequestParameters {
    /// Triton's binary extension: every output as binary data.
    #[serde(default)]
    pub binary_data_output: bool,
}

#[derive(Deserialize)]
pub struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    /// Absent when the values come as binary data.
    pub data: Option<Value>,
    #[serde(default)]
    pub parameters: InputParameters,
}

#[derive(Deserialize, Default)]
pub struct InputParameters {
    /// Triton's binary extension: this input's values are this many bytes of binary data.
    pub binary_data_size: Option<usize>,
}

#[derive(Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: OutputParameters,
}

#[derive(Deserialize, Default)]
pub struct OutputParameters {
    pub binary_data: Option<bool>,
}

#[derive(Deserialize)]
pub struct PredictRequest {
    pub instances: Option<Vec<Value>>,
    pub inputs: Option<Value>,
}

pub fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid {what}: {e}")))
}

/// Checks a v2 request against the model: one FP32 input named `input`, a shape of
/// [batch, model dims…] (or [batch, values per sample]), data flat or nested to match.
pub fn v2_samples(
    req: &InferRequest,
    binary: &[u8],
    model: &Signature,
    max_batch: usize,
) -> Result<Samples, ApiError> {
    let input = match req.inputs.as_slice() {
        [one] => one,
        other => {
            return Err(ApiError::bad_request(format!(
                "expected exactly one input (`{INPUT_NAME}`), got {}",
                other.len()
            )))
        }
    };
    if input.name != INPUT_NAME {
        return Err(ApiError::bad_request(format!(
            "unknown input `{}`: model `{}` has one input, `{INPUT_NAME}`",
            input.name, model.name
        )));
    }
    if input.datatype != "FP32" {
        return Err(ApiError::bad_request(format!(
            "input datatype `{}` is not supported: model `{}` takes FP32",
            input.datatype, model.name
        )));
    }
    refuse_categorical_arrays(model)?;
    let rows = check_shape(&input.shape, model, max_batch)?;
    let dims: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
    let mut binary = BinaryData::new(binary);
    let values = match (&input.data, input.parameters.binary_data_size) {
        (None, Some(size)) => binary.take_f32(size, dims.iter().product(), &input.name)?,
        (Some(data), None) => {
            let gaps = model.table.as_ref().map(TableInput::gaps);
            read_tensor(data, &dims, "data", gaps.as_deref())?
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "input `{}` has both `data` and parameters.binary_data_size; send one",
                input.name
            )))
        }
        (None, None) => {
            return Err(ApiError::bad_request(format!(
                "input `{}` has no `data` (nor parameters.binary_data_size for binary data)",
                input.name
            )))
        }
    };
    binary.finish()?;
    Ok(Samples { values, rows })
}

/// The batch size a request shape stands for, once it is known to fit the model.
fn check_shape(shape: &[i64], model: &Signature, max_batch: usize) -> Result<usize, ApiError> {
    let expected = format!("[N, {}]", join(&model.input_dims));
    let wrong = || {
        ApiError::bad_request(format!(
            "input shape {shape:?} does not fit model `{}`: expected {expected} or [N, {}] with N ≥ 1",
            model.name, model.input_size
        ))
    };
    let (&first, sample) = shape.split_first().ok_or_else(wrong)?;
    let sample: Vec<usize> = sample.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
    let flat = sample == [model.input_size];
    if first < 1 || (sample != model.input_dims && !flat) {
        return Err(wrong());
    }
    check_batch(usize::try_from(first).unwrap_or(usize::MAX), max_batch)
}

fn check_batch(rows: usize, max_batch: usize) -> Result<usize, ApiError> {
    if rows > max_batch {
        return Err(ApiError::bad_request(format!(
            "a batch of {rows} samples is more than this server takes in one request ({max_batch}, --max-batch)"
        )));
    }
    Ok(rows)
}

/// Categories have no number a client could know, so a model with categorical columns
/// takes its samples as objects keyed by column name, categories as strings.
fn refuse_categorical_arrays(model: &Signature) -> Result<(), ApiError> {
    match &model.table {
        Some(table) if table.has_categories() => Err(ApiError::bad_request(format!(
            "model `{}` has categorical columns: send TF-Serving instances keyed by column name \
             (POST /v1/models/{}:predict with {{\"instances\": [{{\"COLUMN\": value, …}}]}}), categories as strings",
            model.name, model.name
        ))),
        _ => Ok(()),
    }
}

/// Reads `data` laid out as `dims`: either one flat array of all the values, or arrays
/// nested exactly as `dims`. Every value must be a number that is finite as an f32, or
/// `null` where `gaps` (per column of a tabular model) says the model fills a gap.
fn read_tensor(
    data: &Value,
    dims: &[usize],
    what: &str,
    gaps: Option<&[bool]>,
) -> Result<Vec<f32>, ApiError> {
    // The claimed shape is checked against the values sent before anything is reserved,
    // so a small request claiming a huge shape costs nothing.
    let total = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let mut values = Vec::new();
    let flat = matches!(data, Value::Array(a) if a.first().is_some_and(Value::is_number) || a.is_empty());
    if flat {
        let items = data.as_array().map(Vec::as_slice).unwrap_or_default();
        if Some(items.len()) != total {
            return Err(ApiError::bad_request(format!(
                "{what} holds {} values, shape {dims:?} needs {}",
                items.len(),
                total.map_or("more than this machine can count".to_string(), |t| t.to_string())
            )));
        }
        values.reserve(items.len());
        for item in items {
            values.push(number(item, values.len(), what, gaps)?);
        }
    } else {
        read_nested(data, dims, what, gaps, &mut values)?;
    }
    Ok(values)
}

fn read_nested(
    data: &Value,
    dims: &[usize],
    what: &str,
    gaps: Option<&[bool]>,
    out: &mut Vec<f32>,
) -> Result<(), ApiError> {
    let Some((&len, rest)) = dims.split_first() else {
        let v = number(data, out.len(), what, gaps)?;
        out.push(v);
        return Ok(());
    };
    match data.as_array() {
        Some(items) if items.len() == len => items
            .iter()
            .try_for_each(|item| read_nested(item, rest, what, gaps, out)),
        _ => Err(ApiError::bad_request(format!(
            "{what} must be a flat array or arrays nested as {dims:?} (at value {})",
            out.len()
        ))),
    }
}

/// Value `index` of a request; `null` is a gap (NaN, filled by the model's cleaning) where
/// `gaps` allows one at that column.
fn number(v: &Value, index: usize, what: &str, gaps: Option<&[bool]>) -> Result<f32, ApiError> {
    if v.is_null() {
        if let Some(gaps) = gaps.filter(|g| !g.is_empty()) {
            if gaps[index % gaps.len()] {
                return Ok(f32::NAN);
            }
            return Err(ApiError::bad_request(format!(
                "{what} value {index} is null, but the model fills no gap in column {} (trained without `missing = \"mean\"` or `\"median\"` for it)",
                index % gaps.len()
            )));
        }
    }
    let Some(x) = v.as_f64() else {
        return Err(ApiError::bad_request(format!(
            "{what} value {index} is {v}, not a number"
        )));
    };
    let x = x as f32;
    if !x.is_finite() {
        return Err(ApiError::bad_request(format!(
            "{what} value {index} ({v}) is not a finite FP32 number"
        )));
    }
    Ok(x)
}

/// TF-Serving's row format: each instance is one sample, flat or nested as the model's
/// input shape.
pub fn tf_samples(req: &PredictRequest, model: &Signature, max_batch: usize) -> Result<Samples, ApiError> {
    let instances =
        match (&req.instances, &req.inputs) {
            (Some(instances), None) => instances,
            (None, Some(_)) => return Err(ApiError::bad_request(
                "the columnar `inputs` format is not supported; send {\"instances\": [...]}, one sample each",
            )),
            _ => {
                return Err(ApiError::bad_request(
                    "expected {\"instances\": [...]}, one sample each",
                ))
            }
        };
    if instances.is_empty() {
        return Err(ApiError::bad_request("`instances` is empty"));
    }
    let rows = check_batch(instances.len(), max_batch)?;
    let gaps = model.table.as_ref().map(TableInput::gaps);
    let mut values = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        let what = format!("instance {i}");
        if let Value::Object(fields) = instance {
            let table = model.table.as_ref().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{what} is an object, but model `{}` is not tabular: send its values as an array",
                    model.name
                ))
            })?;
            table_row(fields, table, &what, &mut values)?;
            continue;
        }
        refuse_categorical_arrays(model)?;
        let dims = match instance.as_array() {
            Some(a)
                if a.len() == model.input_size && a.first().is_some_and(|v| v.is_number() || v.is_null()) =>
            {
                vec![model.input_size]
            }
            _ => model.input_dims.clone(),
        };
        values.extend(read_tensor(instance, &dims, &what, gaps.as_deref())?);
    }
    Ok(Samples { values, rows })
}

/// One tabular sample keyed by column name, as `kiln predict` reads a CSV row with a
/// header: every feature column present (or `null`/absent where the model fills gaps),
/// numbers for numeric columns, category names (or numbers standing for them) for
/// categorical ones; the label column may be sent and is ignored; any other name is an error.
fn table_row(
    fields: &serde_json::Map<String, Value>,
    table: &TableInput,
    what: &str,
    out: &mut Vec<f32>,
) -> Result<(), ApiError> {
    if let Some(unknown) = fields
        .keys()
        .find(|k| **k != table.label && !table.columns.iter().any(|c| &c.name == *k))
    {
        let names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        return Err(ApiError::bad_request(format!(
            "{what}: unknown column {unknown:?}; the model's columns are {names:?}"
        )));
    }
    for column in &table.columns {
        let value = fields.get(&column.name).unwrap_or(&Value::Null);
        if value.is_null() {
            if !column.fills_gaps {
                return Err(ApiError::bad_request(format!(
                    "{what}: column {:?} is missing, and the model fills no gap in it \
                     (trained without `missing = \"mean\"` or `\"median\"` for it)",
                    column.name
                )));
            }
            out.push(f32::NAN);
            continue;
        }
        out.push(match &column.categories {
            None => column_number(value, &column.name, what)?,
            Some(categories) => category_index(value, categories, &column.name, what)?,
        });
    }
    Ok(())
}

fn column_number(value: &Value, column: &str, what: &str) -> Result<f32, ApiError> {
    match value.as_f64().map(|x| x as f32) {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(ApiError::bad_request(format!(
            "{what}: column {column:?} is {value}, expected a finite FP32 number (the column is numeric)"
        ))),
    }
}

/// The index of a category among the sorted training categories; one never seen in
/// training gets the count (it encodes as all zeros), as in `kiln predict`.
fn category_index(value: &Value, categories: &[String], column: &str, what: &str) -> Result<f32, ApiError> {
    let name = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            return Err(ApiError::bad_request(format!(
                "{what}: column {column:?} is {other}, expected a category name (the column is categorical)"
            )))
        }
    };
    let index = categories
        .binary_search_by(|c| c.as_str().cmp(&name))
        .unwrap_or(categories.len());
    Ok(index as f32)
}

#[derive(Serialize)]
pub struct InferResponse<'a> {
    pub model_name: &'a str,
    pub model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub outputs: Vec<OutputTensor>,
}

#[derive(Serialize)]
pub struct OutputTensor {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<OutputData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BinarySize>,
}

#[derive(Serialize)]
pub struct BinarySize {
    pub binary_data_size: usize,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum OutputData {
    Floats(Vec<f32>),
    Strings(Vec<String>),
}

impl OutputData {
    fn to_bytes(&self) -> Vec<u8> {
        match self {
            OutputData::Floats(values) => binary::f32_bytes(values),
            OutputData::Strings(items) => binary::bytes_tensor(items),
        }
    }
}

/// How one output goes back: in the JSON, or as binary data after it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Encoding {
    Json,
    Binary,
}

/// The outputs a request asked for (all when it named none), each with its encoding.
#[derive(Debug, PartialEq)]
pub struct Wanted {
    pub probabilities: Option<Encoding>,
    pub class: Option<Encoding>,
}

/// Which outputs the client asked for; unknown names are an error.
pub fn requested_outputs(req: &InferRequest) -> Result<Wanted, ApiError> {
    let default = match req.parameters.binary_data_output {
        true => Encoding::Binary,
        false => Encoding::Json,
    };
    let Some(outputs) = &req.outputs else {
        return Ok(Wanted {
            probabilities: Some(default),
            class: Some(default),
        });
    };
    let mut wanted = Wanted {
        probabilities: None,
        class: None,
    };
    for o in outputs {
        let encoding = match o.parameters.binary_data {
            Some(true) => Encoding::Binary,
            Some(false) => Encoding::Json,
            None => default,
        };
        match o.name.as_str() {
            PROBABILITIES => wanted.probabilities = Some(encoding),
            CLASS => wanted.class = Some(encoding),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown output `{other}`: the outputs are `{PROBABILITIES}` and `{CLASS}`"
                )))
            }
        }
    }
    Ok(wanted)
}

/// The answer to a v2 request: JSON alone, or a JSON header and binary data when any
/// output was asked for as binary.
pub fn v2_response(
    req: &InferRequest,
    model: &Signature,
    rows: usize,
    probs: Vec<f32>,
) -> Result<axum::response::Response, ApiError> {
    let wanted = requested_outputs(req)?;
    let mut outputs = Vec::new();
    let mut binary_data = Vec::new();
    let mut add = |name, datatype, shape, data: OutputData, encoding| {
        let tensor = match encoding {
            Encoding::Json => OutputTensor {
                name,
                datatype,
                shape,
                data: Some(data),
                parameters: None,
            },
            Encoding::Binary => {
                let bytes = data.to_bytes();
                let parameters = Some(BinarySize {
                    binary_data_size: bytes.len(),
                });
                binary_data.extend(bytes);
                OutputTensor {
                    name,
                    datatype,
                    shape,
                    data: None,
                    parameters,
                }
            }
        };
        outputs.push(tensor);
    };
    // Binary data follows in the order the outputs are listed: probabilities, then class.
    let class_names = classes(model, &probs);
    if let Some(encoding) = wanted.probabilities {
        add(
            PROBABILITIES,
            "FP32",
            vec![rows, model.outputs],
            OutputData::Floats(probs),
            encoding,
        );
    }
    if let Some(encoding) = wanted.class {
        add(
            CLASS,
            "BYTES",
            vec![rows],
            OutputData::Strings(class_names),
            encoding,
        );
    }
    let body = InferResponse {
        model_name: &model.name,
        model_version: "1",
        id: req.id.as_deref(),
        outputs,
    };
    if ![wanted.probabilities, wanted.class].contains(&Some(Encoding::Binary)) {
        return Ok(axum::Json(body).into_response());
    }
    let json = serde_json::to_vec(&body).expect("a response serializes");
    Ok(binary::response(json, binary_data))
}

#[derive(Serialize)]
pub struct Prediction {
    pub class: String,
    pub probabilities: Vec<f32>,
}

#[derive(Serialize)]
pub struct PredictResponse {
    pub predictions: Vec<Prediction>,
}

pub fn tf_response(model: &Signature, probs: &[f32]) -> PredictResponse {
    let predictions = probs
        .chunks_exact(model.outputs.max(1))
        .map(|p| Prediction {
            class: model.class_name(kiln::metrics::argmax(p)),
            probabilities: p.to_vec(),
        })
        .collect();
    PredictResponse { predictions }
}

fn classes(model: &Signature, probs: &[f32]) -> Vec<String> {
    probs
        .chunks_exact(model.outputs.max(1))
        .map(|p| model.class_name(kiln::metrics::argmax(p)))
        .collect()
}

fn join(dims: &[usize]) -> String {
    dims.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A 90-byte request claiming a 10^10-value tensor once made the decoder reserve it all
    /// (and the process abort); the values are counted first now.
    #[test]
    fn a_claimed_shape_far_larger_than_the_data_reserves_nothing() {
        for dims in [&[1, 100_000, 100_000][..], &[usize::MAX, 2]] {
            let err = read_tensor(&json!([1.0]), dims, "data", None).unwrap_err();
            assert!(format!("{err:?}").contains("holds 1 values"), "{err:?}");
        }
    }

    #[test]
    fn data_may_be_flat_or_nested_exactly_as_the_shape() {
        let flat = read_tensor(&json!([1, 2, 3, 4, 5, 6]), &[1, 2, 3], "data", None).unwrap();
        let nested = read_tensor(&json!([[[1, 2, 3], [4, 5, 6]]]), &[1, 2, 3], "data", None).unwrap();
        assert_eq!(flat, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(nested, flat);
        // Ragged or partly flattened nesting is not the shape.
        assert!(read_tensor(&json!([[1, 2, 3, 4, 5, 6]]), &[1, 2, 3], "data", None).is_err());
        assert!(read_tensor(&json!([[[1, 2, 3], [4, 5]]]), &[1, 2, 3], "data", None).is_err());
    }

    #[test]
    fn values_must_be_finite_fp32_numbers() {
        for bad in [
            json!([1, 1e39]),
            json!([1, -1e39]),
            json!([1, "2"]),
            json!([1, null]),
            json!([1, [2]]),
        ] {
            let err = read_tensor(&bad, &[2], "data", None).unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(err.message.contains("value 1"), "{}", err.message);
        }
        assert_eq!(
            read_tensor(&json!([3.4e38, -0.0]), &[2], "data", None).unwrap(),
            vec![3.4e38, -0.0]
        );
    }

    #[test]
    fn a_batch_over_the_maximum_is_refused() {
        assert_eq!(check_batch(64, 64), Ok(64));
        let err = check_batch(65, 64).unwrap_err();
        assert!(
            err.message.contains("65 samples") && err.message.contains("64"),
            "{}",
            err.message
        );
    }

    fn table() -> TableInput {
        use crate::models::TableColumn;
        TableInput {
            columns: vec![
                TableColumn {
                    name: "size".into(),
                    categories: None,
                    fills_gaps: false,
                },
                TableColumn {
                    name: "colour".into(),
                    categories: Some(vec!["blue".into(), "red".into()]),
                    fills_gaps: true,
                },
            ],
            label: "kind".into(),
        }
    }

    fn row(fields: Value) -> Result<Vec<f32>, ApiError> {
        let mut out = Vec::new();
        table_row(fields.as_object().unwrap(), &table(), "instance 0", &mut out).map(|()| out)
    }

    #[test]
    fn a_table_row_is_read_by_column_name_in_the_model_order() {
        assert_eq!(
            row(json!({ "colour": "red", "size": 2.5 })).unwrap(),
            vec![2.5, 1.0]
        );
        // The label may come along; an unseen category is the category count.
        assert_eq!(
            row(json!({ "size": 1, "colour": "green", "kind": "x" })).unwrap(),
            vec![1.0, 2.0]
        );
        let gap = row(json!({ "size": 1, "colour": null })).unwrap();
        assert!(gap[1].is_nan());
        assert!(row(json!({ "size": 1 })).unwrap()[1].is_nan());
    }

    #[test]
    fn a_gap_the_model_cannot_fill_or_an_unknown_column_is_refused() {
        let err = row(json!({ "colour": "red" })).unwrap_err();
        assert!(
            err.message.contains("column \"size\" is missing"),
            "{}",
            err.message
        );
        let err = row(json!({ "size": 1, "colour": "red", "sise": 2 })).unwrap_err();
        assert!(err.message.contains("unknown column \"sise\""), "{}", err.message);
        // In arrays, a null is a gap only where the column allows one.
        let gaps = [false, true];
        assert!(read_tensor(&json!([1, null]), &[2], "data", Some(&gaps)).unwrap()[1].is_nan());
        let err = read_tensor(&json!([null, 1]), &[2], "data", Some(&gaps)).unwrap_err();
        assert!(err.message.contains("value 0 is null"), "{}", err.message);
    }
}
