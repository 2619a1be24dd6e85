//! The geometry of a convolution or pooling window over channels-last (H, W, C) samples:
//! TensorFlow's output sizes and padding for `valid` and `same`, strides and dilation, and
//! which input index each tap of an output position reads. Shared by convolution, its
//! Winograd and direct paths, and pooling.

/// TensorFlow's padding modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// No padding: the window stays inside the image.
    Valid,
    /// Output size ⌈in / stride⌉, zeros split evenly (the extra one at the bottom/right).
    Same,
}

/// One spatial axis: input size, window size (after dilation), stride, padding before,
/// output size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    pub input: u32,
    pub kernel: u32,
    pub stride: u32,
    pub dilation: u32,
    pub pad_before: u32,
    pub output: u32,
}

impl Axis {
    /// TensorFlow's output size and padding for one axis; None if no output position fits.
    pub fn new(
        input: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        padding: Padding,
    ) -> Option<Axis> {
        if kernel == 0 || stride == 0 || dilation == 0 {
            return None;
        }
        let span = (kernel - 1) * dilation + 1;
        let (output, pad_before) = match padding {
            Padding::Valid if input >= span => ((input - span) / stride + 1, 0),
            Padding::Valid => return None,
            Padding::Same => {
                let output = input.div_ceil(stride);
                let total = ((output - 1) * stride + span).saturating_sub(input);
                (output, total / 2)
            }
        };
        if output == 0 {
            return None;
        }
        let narrow = |v: usize| u32::try_from(v).ok();
        Some(Axis {
            input: narrow(input)?,
            kernel: narrow(kernel)?,
            stride: narrow(stride)?,
            dilation: narrow(dilation)?,
            pad_before: narrow(pad_before)?,
            output: narrow(output)?,
        })
    }

    /// The input index tap `k` of output position `o` reads, or None in the padding.
    #[inline]
    pub fn source(&self, o: usize, k: usize) -> Option<usize> {
        let i =
            (o * self.stride as usize + k * self.dilation as usize).checked_sub(self.pad_before as usize)?;
        (i < self.input as usize).then_some(i)
    }
}

/// The geometry of a convolution or pooling window over (H, W, C) samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub height: Axis,
    pub width: Axis,
    pub channels: u32,
}

impl Window {
    pub fn output_pixels(&self) -> usize {
        self.height.output as usize * self.width.output as usize
    }

    pub fn input_pixels(&self) -> usize {
        self.height.input as usize * self.width.input as usize
    }

    pub fn taps(&self) -> usize {
        self.height.kernel as usize * self.width.kernel as usize
    }
}
