//! XEP-0077 in-band registration (off by default, rate-limited when on), password change and
//! account removal.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::{Client, Scram, TestServer};
use zorg_proto::ns;

const FORM: &str = "<iq type='get' id='g'><query xmlns='jabber:iq:register'/></iq>";

#[tokio::test]
async fn off_by_default() {
    let t = TestServer::start().await;
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    assert!(
        !c.features
            .as_ref()
            .unwrap()
            .has_child("register", ns::REGISTER_FEATURE)
    );
    let r = c.iq(FORM, "g").await;
    assert!(
        r.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("service-unavailable", ns::STANZA_ERRORS)
    );
    t.stop().await;
}

#[tokio::test]
async fn register_login_change_password_remove() {
    let t = TestServer::start_with(|c| {
        c.registration.enabled = true;
        c.registration.per_ip_per_hour = 2;
    })
    .await;
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    assert!(
        c.features
            .as_ref()
            .unwrap()
            .has_child("register", ns::REGISTER_FEATURE)
    );
    let r = c.iq(FORM, "g").await;
    let q = r.get_child("query", ns::REGISTER).unwrap();
    assert!(q.has_child("username", ns::REGISTER) && q.has_child("password", ns::REGISTER));
    let r = c.iq("<iq type='set' id='s1'><query xmlns='jabber:iq:register'><username>Nurse</username><password>s3cret</password></query></iq>", "s1").await;
    assert_eq!(r.attr("type"), Some("result"));
    // Taken names are refused; this is the second attempt from this address.
    let r = c.iq("<iq type='set' id='s2'><query xmlns='jabber:iq:register'><username>nurse</username><password>x</password></query></iq>", "s2").await;
    assert!(
        r.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("conflict", ns::STANZA_ERRORS)
    );
    // A third attempt within the hour is refused by the rate limit.
    let r = c.iq("<iq type='set' id='s3'><query xmlns='jabber:iq:register'><username>other</username><password>x</password></query></iq>", "s3").await;
    assert!(
        r.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("resource-constraint", ns::STANZA_ERRORS)
    );

    // The new account logs in (its name was normalised to lower case).
    c.auth_scram("nurse", "s3cret", Scram::Sha256, None)
        .await
        .unwrap();
    c.bind(Some("r")).await;
    assert_eq!(c.jid, "nurse@localhost/r");
    let r = c.iq("<iq type='set' id='p'><query xmlns='jabber:iq:register'><username>nurse</username><password>n3w</password></query></iq>", "p").await;
    assert_eq!(r.attr("type"), Some("result"));
    // Nobody else's password can be changed.
    let r = c.iq("<iq type='set' id='p2'><query xmlns='jabber:iq:register'><username>admin</username><password>x</password></query></iq>", "p2").await;
    assert_eq!(r.attr("type"), Some("error"));
    let mut c2 = Client::connect_starttls(t.starttls, "localhost").await;
    assert!(
        c2.auth_scram("nurse", "s3cret", Scram::Sha256, None)
            .await
            .is_err()
    );
    let mut c2 = Client::connect_starttls(t.starttls, "localhost").await;
    c2.auth_scram("nurse", "n3w", Scram::Sha1, None)
        .await
        .unwrap();
    c2.bind(Some("r2")).await;

    // Removing the account ends its sessions and its credentials.
    let r = c
        .iq(
            "<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>",
            "rm",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    c.expect_stream_error("not-authorized").await;
    c2.expect_stream_error("not-authorized").await;
    let mut c3 = Client::connect_starttls(t.starttls, "localhost").await;
    assert!(
        c3.auth_scram("nurse", "n3w", Scram::Sha256, None)
            .await
            .is_err()
    );
    t.stop().await;
}
