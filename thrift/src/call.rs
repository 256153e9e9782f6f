//! The server side of `InferenceService`: decode a call's bytes, encode its reply. Built on the
//! thrift crate's binary protocol and the generated structs, over in-memory buffers so the
//! network side can stay async.

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol,
    TMessageIdentifier, TMessageType, TOutputProtocol, TSerializable, TStructIdentifier, TType,
};
use thrift::{ApplicationError, ApplicationErrorKind};

use crate::detect::DetectionResult;
use crate::serve::{InferenceParams, InferenceResult};

#[derive(Debug)]
pub enum Call {
    Ping {
        seq: i32,
    },
    InferBatch {
        seq: i32,
        params: InferenceParams,
    },
    /// detect.thrift's call: the same params, a list of detections back.
    InferDetect {
        seq: i32,
        params: InferenceParams,
    },
    /// A method this service does not have: answered with UNKNOWN_METHOD.
    Unknown {
        name: String,
        seq: i32,
    },
}

/// Decodes one whole message (as found by `skim`).
pub fn decode_call(msg: &[u8]) -> thrift::Result<Call> {
    // Not strict: old clients send unversioned headers.
    let mut p = TBinaryInputProtocol::new(msg, false);
    let id = p.read_message_begin()?;
    if id.message_type != TMessageType::Call && id.message_type != TMessageType::OneWay {
        return Err(thrift::Error::Protocol(thrift::ProtocolError::new(
            thrift::ProtocolErrorKind::InvalidData,
            format!("expected a call, got {:?}", id.message_type),
        )));
    }
    let seq = id.sequence_number;
    let mut params = None;
    p.read_struct_begin()?;
    loop {
        let field = p.read_field_begin()?;
        if field.field_type == TType::Stop {
            break;
        }
        let takes_params = id.name == "infer_batch" || id.name == "infer_detect";
        if takes_params && field.id == Some(1) && field.field_type == TType::Struct {
            params = Some(InferenceParams::read_from_in_protocol(&mut p)?);
        } else {
            p.skip(field.field_type)?;
        }
        p.read_field_end()?;
    }
    p.read_struct_end()?;
    p.read_message_end()?;
    Ok(match id.name.as_str() {
        "ping" => Call::Ping { seq },
        "infer_batch" | "infer_detect" => match params {
            Some(params) if id.name == "infer_batch" => Call::InferBatch { seq, params },
            Some(params) => Call::InferDetect { seq, params },
            None => {
                return Err(thrift::Error::Protocol(thrift::ProtocolError::new(
                    thrift::ProtocolErrorKind::InvalidData,
                    format!("{} without its params field", id.name),
                )))
            }
        },
        _ => Call::Unknown { name: id.name, seq },
    })
}

fn reply(
    name: &str,
    seq: i32,
    body: impl FnOnce(&mut dyn TOutputProtocol) -> thrift::Result<()>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    {
        let mut p = TBinaryOutputProtocol::new(&mut out, true);
        // Writes into a Vec cannot fail.
        let _ = (|| -> thrift::Result<()> {
            p.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Reply, seq))?;
            p.write_struct_begin(&TStructIdentifier::new(format!("{name}_result")))?;
            body(&mut p)?;
            p.write_field_stop()?;
            p.write_struct_end()?;
            p.write_message_end()?;
            p.flush()
        })();
    }
    out
}

pub fn encode_ping_reply(seq: i32) -> Vec<u8> {
    reply("ping", seq, |_| Ok(()))
}

pub fn encode_infer_reply(seq: i32, result: &InferenceResult) -> Vec<u8> {
    reply("infer_batch", seq, |p| {
        p.write_field_begin(&TFieldIdentifier::new("success", TType::Struct, 0))?;
        result.write_to_out_protocol(p)?;
        p.write_field_end()
    })
}

pub fn encode_detect_reply(seq: i32, result: &DetectionResult) -> Vec<u8> {
    reply("infer_detect", seq, |p| {
        p.write_field_begin(&TFieldIdentifier::new("success", TType::Struct, 0))?;
        result.write_to_out_protocol(p)?;
        p.write_field_end()
    })
}

/// A TApplicationException reply: the client raises it; the connection stays usable.
pub fn encode_exception(
    name: &str,
    seq: i32,
    kind: ApplicationErrorKind,
    message: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + message.len());
    {
        let mut p = TBinaryOutputProtocol::new(&mut out, true);
        let _ = (|| -> thrift::Result<()> {
            p.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Exception, seq))?;
            thrift::Error::write_application_error_to_out_protocol(
                &ApplicationError::new(kind, message),
                &mut p,
            )?;
            p.write_message_end()?;
            p.flush()
        })();
    }
    out
}

/// A client's `infer_batch` call, as the generated client writes it (tests and fuzzing).
pub fn encode_infer_call(name: &str, seq: i32, uuid: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut p = TBinaryOutputProtocol::new(&mut out, true);
        let params = InferenceParams::new(uuid.to_string(), data.to_vec());
        let _ = (|| -> thrift::Result<()> {
            p.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, seq))?;
            p.write_struct_begin(&TStructIdentifier::new(format!("{name}_args")))?;
            p.write_field_begin(&TFieldIdentifier::new("params", TType::Struct, 1))?;
            params.write_to_out_protocol(&mut p)?;
            p.write_field_end()?;
            p.write_field_stop()?;
            p.write_struct_end()?;
            p.write_message_end()?;
            p.flush()
        })();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_an_infer_call() {
        let msg = encode_infer_call("infer_batch", 42, "u", b"jpeg");
        match decode_call(&msg).unwrap() {
            Call::InferBatch { seq, params } => {
                assert_eq!(seq, 42);
                assert_eq!(params.uuid, "u");
                assert_eq!(params.data, b"jpeg");
            }
            other => panic!("{other:?}"),
        }
        assert!(decode_call(&msg[..msg.len() - 3]).is_err());
        let msg = encode_infer_call("infer_detect", 7, "v", b"png");
        match decode_call(&msg).unwrap() {
            Call::InferDetect { seq, params } => {
                assert_eq!(seq, 7);
                assert_eq!(params.data, b"png");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_methods_are_reported_not_fatal() {
        let msg = encode_infer_call("classify", 3, "u", b"x");
        assert!(matches!(
            decode_call(&msg).unwrap(),
            Call::Unknown { seq: 3, .. }
        ));
    }
}
