//! Arbitrary bytes as an IDX file (MNIST's format): `parse_idx` must return the array or
//! an error, and an array it returns must hold exactly the values its dimensions promise.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(array) = kiln::data::parse_idx(data, Path::new("fuzz.idx")) {
        let expected: usize = array.dims.iter().product();
        assert_eq!(array.data.len(), expected, "dims {:?}", array.dims);
        assert!((1..=4).contains(&array.dims.len()), "dims {:?}", array.dims);
    }
});
