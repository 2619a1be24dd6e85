//! `GET /`: one self-contained HTML page (no external scripts or fonts, so it works on a
//! machine without internet) listing the models; 28×28 models get a digit pad.

pub const HTML: &str = include_str!("page.html");
