//! An entry point for the fuzz target `serve_request` (fuzz/fuzz_targets): a request body
//! through every decoder a route runs before the model sees it, without a server or a
//! model file. Not part of the API.

use axum::http::{HeaderMap, HeaderValue};

use crate::binary;
use crate::models::{Signature, TableColumn, TableInput};
use crate::protocol::{self, InferRequest, PredictRequest};

const MAX_BATCH: usize = 64;

/// The first byte picks the decoder and the model (an 8×8 image model or a tabular one);
/// with the binary extension the next two give the JSON part's length.
pub fn decode_request(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let model = match selector & 1 {
        0 => image_model(),
        _ => table_model(),
    };
    match (selector >> 1) % 3 {
        0 => decode_v2(rest, &HeaderMap::new(), &model),
        1 => {
            let Some((length, body)) = rest.split_first_chunk::<2>() else {
                return;
            };
            let mut headers = HeaderMap::new();
            headers.insert(
                binary::HEADER_LENGTH,
                HeaderValue::from(u16::from_le_bytes(*length)),
            );
            decode_v2(body, &headers, &model);
        }
        _ => {
            if let Ok(req) = protocol::parse_json::<PredictRequest>(rest, "predict request") {
                if let Ok(samples) = protocol::tf_samples(&req, &model, MAX_BATCH) {
                    check_samples(&samples, &model);
                }
            }
        }
    }
}

fn decode_v2(body: &[u8], headers: &HeaderMap, model: &Signature) {
    let Ok((json, binary_data)) = binary::split_body(body, headers) else {
        return;
    };
    let Ok(req) = protocol::parse_json::<InferRequest>(json, "inference request") else {
        return;
    };
    if protocol::requested_outputs(&req).is_err() {
        return;
    }
    if let Ok(samples) = protocol::v2_samples(&req, binary_data, model, MAX_BATCH) {
        check_samples(&samples, model);
        let probs = vec![0.1; samples.rows * model.outputs];
        let _ = protocol::v2_response(&req, model, samples.rows, probs);
    }
}

/// What the decoders promise the compute threads: whole samples, no more than the limit.
fn check_samples(samples: &protocol::Samples, model: &Signature) {
    assert!(
        samples.rows >= 1 && samples.rows <= MAX_BATCH,
        "{} rows",
        samples.rows
    );
    assert_eq!(samples.values.len(), samples.rows * model.input_size);
}

fn image_model() -> Signature {
    Signature {
        name: "digits".into(),
        input_dims: vec![8, 8],
        input_size: 64,
        outputs: 10,
        classes: (0..10).map(|c| c.to_string()).collect(),
        table: None,
    }
}

fn table_model() -> Signature {
    let column = |name: &str, categories: Option<&[&str]>, fills_gaps| TableColumn {
        name: name.into(),
        categories: categories.map(|c| c.iter().map(|s| s.to_string()).collect()),
        fills_gaps,
    };
    Signature {
        name: "table".into(),
        input_dims: vec![3],
        input_size: 3,
        outputs: 2,
        classes: vec!["no".into(), "yes".into()],
        table: Some(TableInput {
            columns: vec![
                column("size", None, true),
                column("colour", Some(&["blue", "red"]), false),
                column("x", None, false),
            ],
            label: "kind".into(),
        }),
    }
}
