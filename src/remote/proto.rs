//! Prometheus remote write 1.0 on the wire: the `WriteRequest` protobuf (prometheus/prompb
//! `remote.proto` and `types.proto`, the fields 1.0 uses), Snappy *block* compressed, and the
//! headers a receiver expects.

/// `prometheus.WriteRequest`: time series, each with its labels and samples.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name (`__name__` among them), samples in time
/// order.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub(crate) labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub(crate) struct Label {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

/// `prometheus.Sample`: a value at a time in milliseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct Sample {
    #[prost(double, tag = "1")]
    pub(crate) value: f64,
    #[prost(int64, tag = "2")]
    pub(crate) timestamp: i64,
}

/// The headers of a remote write 1.0 request, beside the body.
pub(crate) const HEADERS: [(&str, &str); 3] = [
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

impl WriteRequest {
    /// The body of a request: the protobuf, Snappy block compressed.
    pub(crate) fn body(&self) -> Vec<u8> {
        let raw = prost::Message::encode_to_vec(self);
        // Compressing a buffer in memory cannot fail but for a size beyond 4 GiB.
        snap::raw::Encoder::new()
            .compress_vec(&raw)
            .unwrap_or_default()
    }

    /// A request from a body (what a receiver does; the spool reads its records so).
    pub(crate) fn from_body(body: &[u8]) -> Option<WriteRequest> {
        let raw = snap::raw::Decoder::new().decompress_vec(body).ok()?;
        prost::Message::decode(raw.as_slice()).ok()
    }

    /// How many samples it carries.
    pub(crate) fn samples(&self) -> usize {
        self.timeseries.iter().map(|t| t.samples.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_prompbs() {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                }],
            }],
        };
        // Field 1 (length-delimited) holding labels (1) and samples (2), as protoc writes it.
        let raw = prost::Message::encode_to_vec(&request);
        assert_eq!(
            raw,
            [
                0x0a, 0x22, // timeseries
                0x0a, 0x0e, 0x0a, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', 0x12, 0x02,
                b'u', b'p', // label
                0x12, 0x10, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, // value 1.0
                0x10, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31, // timestamp
            ]
        );
        let body = request.body();
        assert_eq!(WriteRequest::from_body(&body), Some(request));
    }
}
