use crate::backend::{key, Backend, InitContext, Key, Settings};
use crate::config::Params;
use crate::error::ConfigError;

// A build without the GPU module checks them and refuses the backend.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub struct DecodeTensorSettings {
    /// The channel order written: RGB, else BGR.
    rgb: bool,
    max_pixels: usize,
    /// Use the chip's hardware JPEG decoder where it has one.
    hardware: bool,
}

impl Settings for DecodeTensorSettings {
    const KEYS: &'static [Key] = &[
        key(
            "color",
            "`rgb` or `bgr`",
            "bgr",
            "the channel order nvJPEG writes",
        ),
        key(
            "max_pixels",
            "a positive integer",
            "50,000,000",
            "larger images are refused from their header",
        ),
        key(
            "nvjpeg_hardware",
            "`true` or `false`",
            "true",
            "use the chip's hardware JPEG decoder where it has one",
        ),
    ];

    fn parse(p: &Params) -> Result<Self, ConfigError> {
        Ok(DecodeTensorSettings {
            // BGR by default, as DecodeMat's.
            rgb: super::color_key(p, "the channel order DecodeTensor writes")?.unwrap_or(false),
            max_pixels: p.usize_or("max_pixels", crate::image::DEFAULT_MAX_PIXELS)?,
            hardware: p.bool_or("nvjpeg_hardware", true)?,
        })
    }
}

/// `DecodeTensor`: JPEG bytes → an HWC u8 image on the GPU, by nvJPEG. A batch goes to the
/// chip's hardware JPEG decoder where it has one and nvJPEG accepts the image (baseline JPEG);
/// the others (progressive, say) go through nvJPEG's hybrid decoder. Channel order: `color`
/// (`bgr` by default, as DecodeMat). An image nvJPEG cannot decode — not a JPEG, CMYK, corrupt —
/// fails that item only, so a following `filter = "or"` node can decode it on the CPU.
/// `max_pixels` as DecodeMat; `nvjpeg_hardware = false` keeps to the hybrid decoder.
#[cfg(feature = "cuda")]
pub struct DecodeTensor {
    decoder: crate::gpu::nvjpeg::Decoder,
    pool: std::sync::Arc<crate::gpu::pool::Pool>,
    max_pixels: usize,
    rgb: bool,
    /// Set inside `SyncTensor`: the decoder is on its stream, and it waits.
    scope: Option<std::sync::Arc<crate::gpu::scope::StreamScope>>,
}

#[cfg(not(feature = "cuda"))]
pub fn new(
    ctx: &InitContext<'_>,
    _: DecodeTensorSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    Err(super::no_cuda(ctx))
}

#[cfg(feature = "cuda")]
pub fn new(
    ctx: &InitContext<'_>,
    s: DecodeTensorSettings,
) -> Result<Box<dyn Backend>, ConfigError> {
    ctx.no_args()?;
    let DecodeTensorSettings {
        rgb,
        max_pixels,
        hardware,
    } = s;
    let gpu = super::open_gpu(ctx, false)?;
    let (stream, scope) = super::scope_stream(ctx, &gpu)?.unzip();
    let priority = crate::gpu::priority::stream_priority(&gpu, ctx.stage)
        .map_err(|e| super::gpu_error(ctx, e))?;
    let mut decoder = crate::gpu::nvjpeg::Decoder::new(&gpu, rgb, hardware, stream, priority)
        .map_err(|e| super::gpu_error(ctx, e.into()))?;
    decoder
        .prepare_batches(ctx.node.max_batch())
        .map_err(|e| super::gpu_error(ctx, e.into()))?;
    if ctx.instance == 0 {
        tracing::info!(
            node = ctx.params().node(),
            "DecodeTensor: nvJPEG {}",
            if decoder.has_hardware() {
                "hardware decoder for baseline JPEGs, hybrid for the rest"
            } else {
                "hybrid decoder (no hardware JPEG decoder used)"
            }
        );
    }
    Ok(Box::new(DecodeTensor {
        decoder,
        pool: crate::gpu::pool::shared(&gpu),
        max_pixels,
        rgb,
        scope,
    }))
}

#[cfg(feature = "cuda")]
impl Backend for DecodeTensor {
    fn takes(&self) -> crate::backend::Takes {
        crate::backend::Takes::Encoded
    }

    fn forward(
        &mut self,
        batch: &mut [crate::item::Item],
    ) -> Result<(), crate::error::BackendError> {
        use crate::item::{DeviceLayout, DeviceMemory, DeviceValue, Value};
        use std::sync::Arc;
        let decoder = &mut self.decoder;
        // (item, bytes, info, destination)
        let mut jobs = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter_mut().enumerate() {
            let bytes = match &item.data {
                Value::Bytes(b) => b.clone(),
                other => {
                    let kind = other.kind();
                    item.fail(format!(
                        "DecodeTensor expects encoded bytes as data, got {kind}"
                    ));
                    continue;
                }
            };
            // What OpenCV refuses the GPU path refuses too (nvJPEG decodes a file cut short,
            // gray where the data ran out): the `or` node after it then answers the CPU
            // path's error, as a CPU pipeline would.
            if bytes.starts_with(&[0xFF, 0xD8]) && !crate::image::jpeg_end::reaches_eoi(&bytes) {
                item.fail(crate::image::ImageError::TruncatedJpeg.to_string());
                continue;
            }
            let info = match decoder.info(&bytes) {
                Ok(info) => info,
                Err(e) => {
                    item.fail(format!("DecodeTensor: {e}"));
                    continue;
                }
            };
            if info.components != 1 && info.components != 3 {
                item.fail(format!(
                    "DecodeTensor: a {}-component JPEG (CMYK or YCCK), which nvJPEG does not \
                     convert as OpenCV does; a `filter = \"or\"` node with DecodeMat can",
                    info.components
                ));
                continue;
            }
            if info.width.saturating_mul(info.height) > self.max_pixels {
                item.fail(format!(
                    "DecodeTensor: a {}×{} image is above max_pixels = {}",
                    info.width, info.height, self.max_pixels
                ));
                continue;
            }
            let buf = self
                .pool
                .take(info.width * info.height * 3)
                .map_err(super::backend_error)?;
            jobs.push((i, bytes, info, buf));
        }
        let args: Vec<(&[u8], u64, usize)> = jobs
            .iter()
            .map(|(_, bytes, info, buf)| (&bytes[..], buf.ptr(), info.width))
            .collect();
        // SAFETY: each destination is a pooled allocation of width × height × 3 bytes from
        // the same bytes' header; `decode` waits for the GPU before returning, or the scope
        // keeps the sources (below) and the items the destinations until the SyncTensor waits.
        let outcomes = unsafe { decoder.decode(&args) };
        drop(args);
        // Inside a SyncTensor the decode may still be running: the request bytes it reads and
        // a failed image's destination, which it may still write, live until the wait.
        let sources: Vec<std::sync::Arc<[u8]>> = match &self.scope {
            Some(_) => jobs.iter().map(|(_, bytes, _, _)| bytes.clone()).collect(),
            None => Vec::new(),
        };
        let mut failed = Vec::new();
        for ((i, _, info, buf), outcome) in jobs.into_iter().zip(outcomes) {
            let item = &mut batch[i];
            match outcome {
                Ok(path) => {
                    // Which decoder did it: for checks and logs.
                    let by = match path {
                        crate::gpu::nvjpeg::Path::Hardware => "nvjpeg-hardware",
                        crate::gpu::nvjpeg::Path::Hybrid => "nvjpeg-hybrid",
                    };
                    item.extras.insert("decoder".into(), Value::Text(by.into()));
                    item.result = Some(Value::Device(DeviceValue {
                        layout: DeviceLayout::Image {
                            height: info.height,
                            width: info.width,
                            channels: 3,
                        },
                        mem: Arc::new(buf),
                    }));
                    item.set_color(self.rgb);
                }
                Err(e) => {
                    item.fail(format!("DecodeTensor: {e}"));
                    failed.push(buf);
                }
            }
        }
        if let Some(scope) = &self.scope {
            scope.keep((sources, failed));
        }
        Ok(())
    }
}
