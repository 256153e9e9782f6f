// Detection answers on the same port as the docs' IDL (serve.thrift, unchanged): a client built
// from serve.thrift keeps calling infer_batch; one built from this file also calls infer_detect.
include "serve.thrift"

namespace py detect

// One detected box: its corners in the photo's pixels, the detector's score and class, and,
// where the pipeline classifies each box (MapReduce), the crop's own class and probability.
struct Detection {
  1: required double x1;
  2: required double y1;
  3: required double x2;
  4: required double y2;
  5: required double score;
  6: required i32 class_id;
  7: required string label;
  8: optional i32 crop_class_id;
  9: optional string crop_label;
  10: optional double crop_score;
}

struct DetectionResult {
  1: required list<Detection> detections;
}

service DetectionService extends serve.InferenceService {
  DetectionResult infer_detect(1: serve.InferenceParams params),
}
