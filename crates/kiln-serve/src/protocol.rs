//! Request and response bodies of the two protocols, and the checks that turn a request
//! into `rows` samples of finite f32 values the model can take.
//!
//! Inputs are raw values, as in the files the model was trained on (MNIST pixels 0-255,
//! CSV features); the compute thread applies the model's fitted normalization, exactly as
//! `kiln predict` does, so both give the same answers for the same values.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;
use crate::models::Model;

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
}

#[derive(Deserialize)]
pub struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub data: Value,
}

#[derive(Deserialize)]
pub struct RequestedOutput {
    pub name: String,
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
pub fn v2_samples(req: &InferRequest, model: &Model, max_batch: usize) -> Result<Samples, ApiError> {
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
    let rows = check_shape(&input.shape, model, max_batch)?;
    let dims: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
    let values = read_tensor(&input.data, &dims, "data")?;
    Ok(Samples { values, rows })
}

/// The batch size a request shape stands for, once it is known to fit the model.
fn check_shape(shape: &[i64], model: &Model, max_batch: usize) -> Result<usize, ApiError> {
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

/// Reads `data` laid out as `dims`: either one flat array of all the values, or arrays
/// nested exactly as `dims`. Every value must be a number that is finite as an f32.
fn read_tensor(data: &Value, dims: &[usize], what: &str) -> Result<Vec<f32>, ApiError> {
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
            values.push(number(item, values.len(), what)?);
        }
    } else {
        read_nested(data, dims, what, &mut values)?;
    }
    Ok(values)
}

fn read_nested(data: &Value, dims: &[usize], what: &str, out: &mut Vec<f32>) -> Result<(), ApiError> {
    let Some((&len, rest)) = dims.split_first() else {
        let v = number(data, out.len(), what)?;
        out.push(v);
        return Ok(());
    };
    match data.as_array() {
        Some(items) if items.len() == len => items
            .iter()
            .try_for_each(|item| read_nested(item, rest, what, out)),
        _ => Err(ApiError::bad_request(format!(
            "{what} must be a flat array or arrays nested as {dims:?} (at value {})",
            out.len()
        ))),
    }
}

fn number(v: &Value, index: usize, what: &str) -> Result<f32, ApiError> {
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
pub fn tf_samples(req: &PredictRequest, model: &Model, max_batch: usize) -> Result<Samples, ApiError> {
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
    let mut values = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        let what = format!("instance {i}");
        let dims = match instance.as_array() {
            Some(a) if a.len() == model.input_size && a.first().is_some_and(Value::is_number) => {
                vec![model.input_size]
            }
            _ => model.input_dims.clone(),
        };
        values.extend(read_tensor(instance, &dims, &what)?);
    }
    Ok(Samples { values, rows })
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
    pub data: OutputData,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum OutputData {
    Floats(Vec<f32>),
    Strings(Vec<String>),
}

/// Which outputs the client asked for (all when it named none); unknown names are an error.
pub fn requested_outputs(req: &InferRequest) -> Result<(bool, bool), ApiError> {
    let Some(outputs) = &req.outputs else {
        return Ok((true, true));
    };
    let (mut probabilities, mut class) = (false, false);
    for o in outputs {
        match o.name.as_str() {
            PROBABILITIES => probabilities = true,
            CLASS => class = true,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown output `{other}`: the outputs are `{PROBABILITIES}` and `{CLASS}`"
                )))
            }
        }
    }
    Ok((probabilities, class))
}

pub fn v2_response<'a>(
    req: &'a InferRequest,
    model: &'a Model,
    rows: usize,
    probs: Vec<f32>,
) -> Result<InferResponse<'a>, ApiError> {
    let (want_probs, want_class) = requested_outputs(req)?;
    let mut outputs = Vec::new();
    if want_probs {
        outputs.push(OutputTensor {
            name: PROBABILITIES,
            datatype: "FP32",
            shape: vec![rows, model.outputs],
            data: OutputData::Floats(probs.clone()),
        });
    }
    if want_class {
        outputs.push(OutputTensor {
            name: CLASS,
            datatype: "BYTES",
            shape: vec![rows],
            data: OutputData::Strings(classes(model, &probs)),
        });
    }
    Ok(InferResponse {
        model_name: &model.name,
        model_version: "1",
        id: req.id.as_deref(),
        outputs,
    })
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

pub fn tf_response(model: &Model, probs: &[f32]) -> PredictResponse {
    let predictions = probs
        .chunks_exact(model.outputs.max(1))
        .map(|p| Prediction {
            class: model.class_name(kiln::metrics::argmax(p)),
            probabilities: p.to_vec(),
        })
        .collect();
    PredictResponse { predictions }
}

fn classes(model: &Model, probs: &[f32]) -> Vec<String> {
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
            let err = read_tensor(&json!([1.0]), dims, "data").unwrap_err();
            assert!(format!("{err:?}").contains("holds 1 values"), "{err:?}");
        }
    }

    #[test]
    fn data_may_be_flat_or_nested_exactly_as_the_shape() {
        let flat = read_tensor(&json!([1, 2, 3, 4, 5, 6]), &[1, 2, 3], "data").unwrap();
        let nested = read_tensor(&json!([[[1, 2, 3], [4, 5, 6]]]), &[1, 2, 3], "data").unwrap();
        assert_eq!(flat, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(nested, flat);
        // Ragged or partly flattened nesting is not the shape.
        assert!(read_tensor(&json!([[1, 2, 3, 4, 5, 6]]), &[1, 2, 3], "data").is_err());
        assert!(read_tensor(&json!([[[1, 2, 3], [4, 5]]]), &[1, 2, 3], "data").is_err());
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
            let err = read_tensor(&bad, &[2], "data").unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(err.message.contains("value 1"), "{}", err.message);
        }
        assert_eq!(
            read_tensor(&json!([3.4e38, -0.0]), &[2], "data").unwrap(),
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
}
