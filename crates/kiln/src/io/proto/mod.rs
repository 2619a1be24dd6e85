//! Protobuf messages kiln writes, as `prost` structs derived by hand from the `.proto`
//! files (only the fields kiln uses; field numbers as upstream), so the build needs no
//! `protoc`: ONNX models ([`onnx`]) and TensorBoard's event records ([`event`]).

pub mod event;
pub mod onnx;

pub use prost::Message;
