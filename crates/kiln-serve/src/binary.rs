//! Triton's binary tensor data extension: a request body may be a JSON header of
//! `Inference-Header-Content-Length` bytes followed by raw tensor bytes, each input that
//! has them saying how many in `parameters.binary_data_size`; outputs asked for with
//! `parameters.binary_data` (or every output, with the request's `binary_data_output`)
//! come back the same way. `tritonclient` sends and asks for this by default.

use axum::http::{HeaderMap, HeaderValue};

use crate::error::ApiError;

/// The header giving the JSON part's length, in requests and responses.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A request body split into its JSON header and its binary tensor data (empty without the
/// extension).
pub fn split_body<'a>(body: &'a [u8], headers: &HeaderMap) -> Result<(&'a [u8], &'a [u8]), ApiError> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        return Ok((body, &[]));
    };
    let length = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "header Inference-Header-Content-Length is {value:?}, expected the JSON part's length in bytes"
            ))
        })?;
    if length > body.len() {
        return Err(ApiError::bad_request(format!(
            "header Inference-Header-Content-Length is {length}, but the body holds only {} bytes",
            body.len()
        )));
    }
    Ok(body.split_at(length))
}

/// The binary data of consecutive inputs, taken in order.
pub struct BinaryData<'a> {
    rest: &'a [u8],
}

impl<'a> BinaryData<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BinaryData { rest: data }
    }

    /// The next `size` bytes, as `values` little-endian FP32 numbers, each finite.
    pub fn take_f32(&mut self, size: usize, values: usize, input: &str) -> Result<Vec<f32>, ApiError> {
        if values.checked_mul(4) != Some(size) {
            return Err(ApiError::bad_request(format!(
                "input `{input}` has binary_data_size {size}, but its shape holds {values} FP32 values ({} bytes)",
                values.saturating_mul(4)
            )));
        }
        if size > self.rest.len() {
            return Err(ApiError::bad_request(format!(
                "input `{input}` has binary_data_size {size}, but only {} bytes of binary data follow the JSON",
                self.rest.len()
            )));
        }
        let (bytes, rest) = self.rest.split_at(size);
        self.rest = rest;
        bytes
            .chunks_exact(4)
            .enumerate()
            .map(|(i, b)| {
                let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if x.is_finite() {
                    Ok(x)
                } else {
                    Err(ApiError::bad_request(format!(
                        "input `{input}` value {i} ({x}) is not a finite FP32 number"
                    )))
                }
            })
            .collect()
    }

    /// Bytes no input claimed mean the client and server disagree on the layout.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.rest.is_empty() {
            return Ok(());
        }
        Err(ApiError::bad_request(format!(
            "{} bytes of binary data follow the JSON that no input's binary_data_size claims",
            self.rest.len()
        )))
    }
}

/// FP32 values as little-endian bytes.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A BYTES tensor: each element as a 4-byte little-endian length, then its bytes.
pub fn bytes_tensor(items: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_le_bytes());
        out.extend_from_slice(item.as_bytes());
    }
    out
}

/// A response of a JSON header and binary data, as Triton sends it.
pub fn response(json: Vec<u8>, binary: Vec<u8>) -> axum::response::Response {
    let length = HeaderValue::from(json.len());
    let mut body = json;
    body.extend_from_slice(&binary);
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    headers.insert(HEADER_LENGTH, length);
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(length: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_LENGTH, HeaderValue::from_str(length).unwrap());
        h
    }

    #[test]
    fn a_body_splits_at_the_header_length_and_inputs_take_their_bytes_in_order() {
        let mut body = br#"{"x":1}"#.to_vec();
        body.extend(f32_bytes(&[1.5, -2.0, 3.0]));
        let (json, data) = split_body(&body, &headers("7")).unwrap();
        assert_eq!(json, br#"{"x":1}"#);
        let mut data = BinaryData::new(data);
        assert_eq!(data.take_f32(8, 2, "a").unwrap(), vec![1.5, -2.0]);
        assert_eq!(data.take_f32(4, 1, "b").unwrap(), vec![3.0]);
        data.finish().unwrap();
        assert_eq!(
            split_body(b"{}", &HeaderMap::new()).unwrap(),
            (&b"{}"[..], &b""[..])
        );
    }

    #[test]
    fn a_layout_that_does_not_add_up_is_a_clear_400() {
        assert!(split_body(b"{}", &headers("3"))
            .unwrap_err()
            .message
            .contains("only 2 bytes"));
        assert!(split_body(b"{}", &headers("-1"))
            .unwrap_err()
            .message
            .contains("-1"));
        let bytes = f32_bytes(&[1.0, f32::NAN]);
        let err = BinaryData::new(&bytes).take_f32(12, 3, "input").unwrap_err();
        assert!(err.message.contains("only 8 bytes"), "{}", err.message);
        let err = BinaryData::new(&bytes).take_f32(8, 3, "input").unwrap_err();
        assert!(
            err.message.contains("holds 3 FP32 values (12 bytes)"),
            "{}",
            err.message
        );
        let err = BinaryData::new(&bytes).take_f32(8, 2, "input").unwrap_err();
        assert!(err.message.contains("value 1 (NaN)"), "{}", err.message);
        let mut data = BinaryData::new(&bytes);
        data.take_f32(4, 1, "input").unwrap();
        assert!(data.finish().unwrap_err().message.contains("4 bytes"));
    }

    #[test]
    fn bytes_tensors_carry_a_length_before_each_element() {
        assert_eq!(
            bytes_tensor(&["7".into(), "ab".into()]),
            vec![1, 0, 0, 0, b'7', 2, 0, 0, 0, b'a', b'b']
        );
    }
}
