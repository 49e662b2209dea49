//! The codes FHIR AuditEvents are made of: DICOM PS3.16 (CID 400/401, participant roles) and
//! the HL7 terminology systems of R4 (source type, entity type, object role, lifecycle), each
//! with its display as the value set spells it.

use serde_json::{Value, json};

pub(super) const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
pub(super) const V3_PARTICIPATION: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
pub(super) const SECURITY_ROLE: &str =
    "http://terminology.hl7.org/CodeSystem/extra-security-role-type";
pub(super) const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
pub(super) const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
pub(super) const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
pub(super) const LIFECYCLE: &str = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle";

/// A code: system, code, display (displays as the code systems spell them).
#[derive(Clone, Copy, Debug)]
pub(super) struct Code(
    pub(super) &'static str,
    pub(super) &'static str,
    pub(super) &'static str,
);

// AuditEvent.type: DICOM CID 400 "Audit Event ID".
pub(super) const APP_ACTIVITY: Code = Code(DCM, "110100", "Application Activity");
pub(super) const AUDIT_LOG_USED: Code = Code(DCM, "110101", "Audit Log Used");
pub(super) const EXPORT: Code = Code(DCM, "110106", "Export");
pub(super) const IMPORT: Code = Code(DCM, "110107", "Import");
pub(super) const PATIENT_RECORD: Code = Code(DCM, "110110", "Patient Record");
pub(super) const QUERY: Code = Code(DCM, "110112", "Query");
pub(super) const SECURITY_ALERT: Code = Code(DCM, "110113", "Security Alert");
pub(super) const USER_AUTHENTICATION: Code = Code(DCM, "110114", "User Authentication");
// AuditEvent.subtype: DICOM CID 401 "Audit Event Type Code".
pub(super) const APP_START: Code = Code(DCM, "110120", "Application Start");
pub(super) const APP_STOP: Code = Code(DCM, "110121", "Application Stop");
pub(super) const LOGIN: Code = Code(DCM, "110122", "Login");
pub(super) const LOGOUT: Code = Code(DCM, "110123", "Logout");
pub(super) const NODE_AUTHENTICATION: Code = Code(DCM, "110126", "Node Authentication");
pub(super) const SECURITY_CONFIGURATION: Code = Code(DCM, "110129", "Security Configuration");
pub(super) const SOFTWARE_CONFIGURATION: Code = Code(DCM, "110131", "Software Configuration");
pub(super) const RESTRICTED_FUNCTION: Code = Code(DCM, "110132", "Use of Restricted Function");
pub(super) const USER_SECURITY: Code = Code(DCM, "110137", "User Security Attributes Changed");
// agent.type: FHIR participation-role-type (DICOM CID 402, v3 ParticipationType, ISO 10181).
pub(super) const APPLICATION: Code = Code(DCM, "110150", "Application");
pub(super) const DESTINATION: Code = Code(DCM, "110152", "Destination Role ID");
pub(super) const SOURCE: Code = Code(DCM, "110153", "Source Role ID");
pub(super) const RECIPIENT: Code = Code(V3_PARTICIPATION, "IRCP", "information recipient");
pub(super) const AUTHOR: Code = Code(V3_PARTICIPATION, "AUT", "author (originator)");
pub(super) const HUMAN_USER: Code = Code(SECURITY_ROLE, "humanuser", "human user");
// source.type, entity.type, entity.role, entity.lifecycle.
pub(super) const APPLICATION_SERVER: Code = Code(SOURCE_TYPE, "4", "Application Server");
pub(super) const PERSON: Code = Code(ENTITY_TYPE, "1", "Person");
pub(super) const SYSTEM_OBJECT: Code = Code(ENTITY_TYPE, "2", "System Object");
pub(super) const DOMAIN_RESOURCE: Code = Code(OBJECT_ROLE, "4", "Domain Resource");
pub(super) const SECURITY_USER: Code = Code(OBJECT_ROLE, "11", "Security User Entity");
pub(super) const SECURITY_RESOURCE: Code = Code(OBJECT_ROLE, "13", "Security Resource");
pub(super) const DATA_REPOSITORY: Code = Code(OBJECT_ROLE, "17", "Data Repository");
pub(super) const CREATION: Code = Code(LIFECYCLE, "1", "Origination / Creation");
pub(super) const ACCESS: Code = Code(LIFECYCLE, "6", "Access / Use");
pub(super) const EXPORTED: Code = Code(LIFECYCLE, "10", "Export");

impl Code {
    pub(super) fn coding(self) -> Value {
        json!({ "system": self.0, "code": self.1, "display": self.2 })
    }
    pub(super) fn concept(self) -> Value {
        json!({ "coding": [self.coding()] })
    }
}
