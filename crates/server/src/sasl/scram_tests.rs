//! Tests of the SCRAM server (RFC 5802 and RFC 7677 vectors, channel binding, malformed input).

use super::*;
use crate::sasl::{derive_record, fake_record};

const SHA1_SALT: &str = "QSXCR+Q6sek8bf92";
const SHA256_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";

fn record(hash: ScramHash, password: &str) -> ScramRecord {
    let salt = match hash {
        ScramHash::Sha1 => SHA1_SALT,
        ScramHash::Sha256 => SHA256_SALT,
    };
    derive_record(hash, password, &STANDARD.decode(salt).unwrap(), 4096).unwrap()
}

fn exporter() -> ChannelBindings {
    ChannelBindings {
        tls_exporter: Some(vec![0xAB; 32]),
        tls_server_end_point: None,
    }
}

/// A minimal SCRAM client: the client-final-message for `server_first`.
fn client_final_for(
    hash: ScramHash,
    password: &str,
    bare: &str,
    server_first: &str,
    cbind_input: &[u8],
) -> String {
    let mut parts = server_first.split(',');
    let nonce = parts.next().unwrap().strip_prefix("r=").unwrap();
    let salt = STANDARD
        .decode(parts.next().unwrap().strip_prefix("s=").unwrap())
        .unwrap();
    let i: u32 = parts.next().unwrap()[2..].parse().unwrap();
    let salted = salted_password(hash, password.as_bytes(), &salt, i.try_into().unwrap());
    let client_key = hmac(hash, &salted.0, b"Client Key");
    let without_proof = format!("c={},r={nonce}", STANDARD.encode(cbind_input));
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hmac(hash, &h(hash, &client_key), auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .iter()
        .zip(&signature)
        .map(|(a, b)| a ^ b)
        .collect();
    format!("{without_proof},p={}", STANDARD.encode(proof))
}

/// Runs a whole exchange; `cb_data` is what the client believes the binding is.
fn run(
    mut server: ScramServer,
    gs2: &str,
    password: &str,
    cb_data: &[u8],
) -> Result<Vec<u8>, SaslFailure> {
    let bare = "n=user,r=clientnonce123";
    server.client_first(format!("{gs2}{bare}").as_bytes())?;
    let server_first = server.server_first(record(server.hash, "pencil"));
    let server_first = String::from_utf8(server_first).unwrap();
    let cbind_input = [gs2.as_bytes(), cb_data].concat();
    let msg = client_final_for(server.hash, password, bare, &server_first, &cbind_input);
    server.client_final(msg.as_bytes())
}

fn rfc_vector(hash: ScramHash, cnonce: &str, snonce: &str, proof: &str, verifier: &str) {
    let salt = match hash {
        ScramHash::Sha1 => SHA1_SALT,
        ScramHash::Sha256 => SHA256_SALT,
    };
    let mut server = ScramServer::new(hash, false, ChannelBindings::default(), false)
        .with_nonce_for_test(snonce);
    let first = server
        .client_first(format!("n,,n=user,r={cnonce}").as_bytes())
        .unwrap();
    assert_eq!(first.username, "user");
    assert_eq!(first.authzid, None);
    let server_first = server.server_first(record(hash, "pencil"));
    let expected = format!("r={cnonce}{snonce},s={salt},i=4096");
    assert_eq!(String::from_utf8(server_first).unwrap(), expected);
    let client_final = format!("c=biws,r={cnonce}{snonce},p={proof}");
    let server_final = server.client_final(client_final.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(server_final).unwrap(), verifier);
}

#[test]
fn rfc5802_sha1_example() {
    rfc_vector(
        ScramHash::Sha1,
        "fyko+d2lbbFgONRv9qkxdawL",
        "3rfcNHYJY1ZVvWVs7j",
        "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
    );
}

#[test]
fn rfc7677_sha256_example() {
    rfc_vector(
        ScramHash::Sha256,
        "rOprNGfwEbeRWgbNEkqO",
        "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    );
}

#[test]
fn plain_scram_success_and_wrong_password() {
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let new = || ScramServer::new(hash, false, ChannelBindings::default(), false);
        assert!(run(new(), "n,,", "pencil", b"").is_ok());
        // "y" is fine when we did not offer -PLUS, and c= must then carry "y,,".
        assert!(run(new(), "y,,", "pencil", b"").is_ok());
        assert_eq!(
            run(new(), "n,,", "pencim", b""),
            Err(SaslFailure::NotAuthorized)
        );
    }
}

#[test]
fn altered_or_replayed_nonce_fails() {
    let bare = "n=user,r=abc";
    let mut server = ScramServer::new(ScramHash::Sha256, false, Default::default(), false);
    server
        .client_first(format!("n,,{bare}").as_bytes())
        .unwrap();
    let sf = String::from_utf8(server.server_first(record(ScramHash::Sha256, "pencil")));
    let sf = sf.unwrap();
    let good = client_final_for(ScramHash::Sha256, "pencil", bare, &sf, b"n,,");
    // Same proof, one nonce character changed.
    let altered = good.replacen(",r=abc", ",r=abd", 1);
    assert_eq!(
        server.client_final(altered.as_bytes()),
        Err(SaslFailure::NotAuthorized)
    );
    // The exchange is spent after a failure, even for the correct message.
    assert_eq!(
        server.client_final(good.as_bytes()),
        Err(SaslFailure::MalformedRequest)
    );
    // Replay into a fresh exchange: the server nonce differs.
    let mut server = ScramServer::new(ScramHash::Sha256, false, Default::default(), false);
    server
        .client_first(format!("n,,{bare}").as_bytes())
        .unwrap();
    server.server_first(record(ScramHash::Sha256, "pencil"));
    assert_eq!(
        server.client_final(good.as_bytes()),
        Err(SaslFailure::NotAuthorized)
    );
}

#[test]
fn plus_tls_exporter() {
    let new = || ScramServer::new(ScramHash::Sha256, true, exporter(), true);
    let gs2 = "p=tls-exporter,,";
    assert!(run(new(), gs2, "pencil", &[0xAB; 32]).is_ok());
    assert_eq!(
        run(new(), gs2, "pencil", &[0xAC; 32]),
        Err(SaslFailure::NotAuthorized)
    );
    // Binding data of the right kind but missing entirely.
    assert_eq!(
        run(new(), gs2, "pencil", b""),
        Err(SaslFailure::NotAuthorized)
    );
    let mut server = new();
    server.client_first(b"p=tls-exporter,,n=user,r=x").unwrap();
    assert_eq!(server.channel_binding(), Some("tls-exporter"));
}

#[test]
fn plus_tls_server_end_point() {
    let cb = ChannelBindings {
        tls_exporter: None,
        tls_server_end_point: Some(vec![0x5E; 32]),
    };
    let server = ScramServer::new(ScramHash::Sha1, true, cb.clone(), true);
    let gs2 = "p=tls-server-end-point,a=juliet@example.com,";
    assert!(run(server, gs2, "pencil", &[0x5E; 32]).is_ok());
    // The exporter is not available on this connection.
    let mut server = ScramServer::new(ScramHash::Sha1, true, cb, true);
    assert_eq!(
        server.client_first(b"p=tls-exporter,,n=user,r=x"),
        Err(SaslFailure::NotAuthorized)
    );
}

#[test]
fn channel_binding_flag_policy() {
    let first = |plus, offers, msg: &[u8]| {
        ScramServer::new(ScramHash::Sha256, plus, exporter(), offers).client_first(msg)
    };
    // y while we offer -PLUS: downgrade.
    assert_eq!(
        first(false, true, b"y,,n=u,r=x"),
        Err(SaslFailure::NotAuthorized)
    );
    assert!(first(false, false, b"y,,n=u,r=x").is_ok());
    // n or y with a -PLUS mechanism, p without one.
    assert_eq!(
        first(true, true, b"n,,n=u,r=x"),
        Err(SaslFailure::MalformedRequest)
    );
    assert_eq!(
        first(true, true, b"y,,n=u,r=x"),
        Err(SaslFailure::MalformedRequest)
    );
    let p = b"p=tls-exporter,,n=u,r=x";
    assert_eq!(first(false, true, p), Err(SaslFailure::MalformedRequest));
    // Unknown or unusable binding types.
    let unique = b"p=tls-unique,,n=u,r=x";
    assert_eq!(first(true, true, unique), Err(SaslFailure::NotAuthorized));
    // Plain n without -PLUS is fine even when we offer -PLUS.
    assert!(first(false, true, b"n,,n=u,r=x").is_ok());
}

#[test]
fn authzid_and_escapes() {
    let mut server = ScramServer::new(ScramHash::Sha256, false, Default::default(), false);
    let first = server
        .client_first(b"n,a=ju=2Cliet=3D,n=us=3Der=2Cx,r=abc,x=ignored")
        .unwrap();
    assert_eq!(first.username, "us=er,x");
    assert_eq!(first.authzid.as_deref(), Some("ju,liet="));
    // SASLprep on the username: soft hyphen vanishes.
    let mut server = ScramServer::new(ScramHash::Sha256, false, Default::default(), false);
    let first = server
        .client_first("n,,n=I\u{AD}X,r=abc".as_bytes())
        .unwrap();
    assert_eq!(first.username, "IX");
}

#[test]
fn malformed_client_first() {
    let long = format!("n,,n=user,r={}", "a".repeat(MAX_MESSAGE_LEN));
    let cases: &[&[u8]] = &[
        b"",
        b"n",
        b"n,",
        b"n,,",
        b"n,,n=user",
        b"n,,r=abc",
        b"n,,r=abc,n=user",
        b"x,,n=user,r=abc",
        b"p=,,n=user,r=abc",
        b"p=tls exporter,,n=user,r=abc",
        b"n,b=x,n=user,r=abc",
        b"n,a=,n=user,r=abc",
        b"n,,n=,r=abc",
        b"n,,n=us=er,r=abc",
        b"n,,n=us=2,r=abc",
        b"n,,n=user,r=",
        b"n,,n=user,r=a b",
        b"n,,n=user,r=abc,",
        b"n,,n=user,r=abc,xx",
        b"n,,n=user,r=abc,1=x",
        b"n,,m=ext,n=user,r=abc",
        b"n,,n=user,r=abc,m=ext",
        b"n,,n=us\0er,r=abc",
        b"n,,n=\xff\xfe,r=abc",
        b"n,,n=bell\x07,r=abc",
        long.as_bytes(),
    ];
    for case in cases {
        let mut server = ScramServer::new(ScramHash::Sha1, false, Default::default(), false);
        assert_eq!(
            server.client_first(case),
            Err(SaslFailure::MalformedRequest),
            "{:?}",
            String::from_utf8_lossy(case)
        );
        assert!(
            server
                .server_first(record(ScramHash::Sha1, "pencil"))
                .is_empty()
        );
    }
}

#[test]
fn malformed_client_final() {
    let cases: &[&[u8]] = &[
        b"",
        b"c=biws,r=abcSERVER",
        b"c=biws,p=AAAA",
        b"r=abcSERVER,c=biws,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        b"c=bi*s,r=abcSERVER,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        b"c=biw,r=abcSERVER,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        b"c=biws,r=abcSERVER,p=!!!",
        b"c=biws,r=abcSERVER,p=",
        b"c=biws,r=abcSERVER,p=AAAA",
        b"c=biws,r=abcSERVER,zz,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        b"c=biws,r=abc\xffSERVER,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    ];
    for case in cases {
        let mut server = ScramServer::new(ScramHash::Sha1, false, Default::default(), false)
            .with_nonce_for_test("SERVER");
        server.client_first(b"n,,n=user,r=abc").unwrap();
        server.server_first(record(ScramHash::Sha1, "pencil"));
        assert_eq!(
            server.client_final(case),
            Err(SaslFailure::MalformedRequest),
            "{:?}",
            String::from_utf8_lossy(case)
        );
    }
}

#[test]
fn calls_out_of_order() {
    let mut server = ScramServer::new(ScramHash::Sha1, false, Default::default(), false);
    assert_eq!(
        server.client_final(b"c=biws"),
        Err(SaslFailure::MalformedRequest)
    );
    let mut server = ScramServer::new(ScramHash::Sha1, false, Default::default(), false);
    server.client_first(b"n,,n=user,r=abc").unwrap();
    assert_eq!(
        server.client_first(b"n,,n=user,r=abc"),
        Err(SaslFailure::MalformedRequest)
    );
}

#[test]
fn unusable_record_is_temporary_failure() {
    // A SHA-1 record handed to a SHA-256 exchange is a server bug, not the client's fault.
    let server = ScramServer::new(ScramHash::Sha256, false, Default::default(), false);
    let mut server = server;
    server.client_first(b"n,,n=user,r=abc").unwrap();
    let sf = server.server_first(record(ScramHash::Sha1, "pencil"));
    assert!(!sf.is_empty());
    let msg = client_final_for(
        ScramHash::Sha256,
        "pencil",
        "n=user,r=abc",
        &String::from_utf8(sf).unwrap(),
        b"n,,",
    );
    assert_eq!(
        server.client_final(msg.as_bytes()),
        Err(SaslFailure::TemporaryAuthFailure)
    );
}

#[test]
fn fake_record_never_authenticates() {
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        for password in ["pencil", "", "user", "secret"] {
            let mut server = ScramServer::new(hash, false, Default::default(), false);
            server.client_first(b"n,,n=ghost,r=abc").unwrap();
            let sf = server.server_first(fake_record(hash, "ghost", &[1; 32], 4096));
            let sf = String::from_utf8(sf).unwrap();
            assert!(sf.starts_with("r=abc") && sf.ends_with(",i=4096"));
            let msg = client_final_for(hash, password, "n=ghost,r=abc", &sf, b"n,,");
            assert_eq!(
                server.client_final(msg.as_bytes()),
                Err(SaslFailure::NotAuthorized)
            );
        }
    }
}

#[test]
fn server_nonce_is_fresh_and_printable() {
    let nonce = |_| {
        let mut server = ScramServer::new(ScramHash::Sha1, false, Default::default(), false);
        server.client_first(b"n,,n=user,r=abc").unwrap();
        let sf = server.server_first(record(ScramHash::Sha1, "pencil"));
        let sf = String::from_utf8(sf).unwrap();
        sf.split(',').next().unwrap()[2..].to_owned()
    };
    let (a, b) = (nonce(0), nonce(1));
    assert_ne!(a, b);
    assert_eq!(a.len(), 3 + 32);
    assert!(is_printable(&a));
}

#[test]
fn debug_shows_no_keys() {
    let mut server = ScramServer::new(ScramHash::Sha1, false, Default::default(), false);
    server.client_first(b"n,,n=user,r=abc").unwrap();
    server.server_first(record(ScramHash::Sha1, "pencil"));
    let dbg = format!("{server:?}");
    assert!(dbg.contains("sent-server-first") && !dbg.contains("key"));
}

/// Only a comparison of the proof checks a password: login limits count nothing else.
#[test]
fn proof_checked_only_when_the_proof_is_compared() {
    let exchange = |password: &str, cb_data: &[u8], gs2: &str, plus: bool| {
        let mut server = ScramServer::new(ScramHash::Sha256, plus, exporter(), plus);
        let bare = "n=user,r=clientnonce123";
        server
            .client_first(format!("{gs2}{bare}").as_bytes())
            .unwrap();
        assert!(!server.proof_checked());
        let sf = String::from_utf8(server.server_first(record(ScramHash::Sha256, "pencil")));
        let sf = sf.unwrap();
        let cbind = [gs2.as_bytes(), cb_data].concat();
        let msg = client_final_for(ScramHash::Sha256, password, bare, &sf, &cbind);
        (
            server.client_final(msg.as_bytes()),
            server.proof_checked(),
            server,
            msg,
        )
    };
    // Right and wrong passwords: checked.
    let (r, checked, ..) = exchange("pencil", b"", "n,,", false);
    assert!(r.is_ok() && checked);
    let (r, checked, ..) = exchange("pencim", b"", "n,,", false);
    assert_eq!(r, Err(SaslFailure::NotAuthorized));
    assert!(checked);
    // A wrong channel binding fails before the proof: nothing checked.
    let (r, checked, ..) = exchange("pencil", &[0xCD; 32], "p=tls-exporter,,", true);
    assert_eq!(r, Err(SaslFailure::NotAuthorized));
    assert!(!checked);
    // Malformed: nothing checked.
    let mut server = ScramServer::new(ScramHash::Sha256, false, Default::default(), false);
    server.client_first(b"n,,n=user,r=abc").unwrap();
    server.server_first(record(ScramHash::Sha256, "pencil"));
    assert_eq!(
        server.client_final(b"c=biws,r=abc"),
        Err(SaslFailure::MalformedRequest)
    );
    assert!(!server.proof_checked());
}
