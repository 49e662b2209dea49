//! FHIR R4 AuditEvent resources for audit records, in a Bundle of type `collection`.

use std::io::{self, Write};

use super::record::Record;

/// Streams a Bundle: the head, one entry per record, the tail.
pub struct BundleWriter<'a> {
    out: io::BufWriter<&'a mut dyn Write>,
    observer: String,
    first: bool,
}

impl<'a> BundleWriter<'a> {
    /// Writes the Bundle's head.
    pub fn start(out: &'a mut dyn Write, observer: &str) -> io::Result<Self> {
        let mut out = io::BufWriter::new(out);
        let head = serde_json::json!({
            "resourceType": "Bundle",
            "type": "collection",
            "timestamp": super::record::timestamp(super::record::now_ms()),
        });
        let head = head.to_string();
        out.write_all(&head.as_bytes()[..head.len() - 1])?;
        out.write_all(b",\"entry\":[")?;
        Ok(Self {
            out,
            observer: observer.to_owned(),
            first: true,
        })
    }

    /// Writes one entry.
    pub fn push(&mut self, r: &Record) -> io::Result<()> {
        if !self.first {
            self.out.write_all(b",")?;
        }
        self.first = false;
        let entry = serde_json::json!({
            "fullUrl": full_url(r),
            "resource": audit_event(r, &self.observer),
        });
        serde_json::to_writer(&mut self.out, &entry)?;
        Ok(())
    }

    /// Writes the tail and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        self.out.write_all(b"]}\n")?;
        self.out.flush()
    }
}

/// `urn:uuid:` made from the record's hash (stable across exports).
pub fn full_url(r: &Record) -> String {
    let h = super::record::hex(&r.hash[..16]);
    format!(
        "urn:uuid:{}-{}-8{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The AuditEvent for one record.
pub fn audit_event(r: &Record, observer: &str) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "AuditEvent",
        "id": format!("zorg-{}", r.seq),
        "recorded": r.time,
        "source": { "observer": { "display": observer } },
        "agent": [],
        "type": { "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100" },
    })
}
