//! The scripted client's expectations can fail: a fake server on loopback writes exactly the
//! bytes each case needs, and the client must notice an extra stanza, a stanza already read
//! into its buffer, half a stanza, or a closed connection. Without these, "nothing arrives" is
//! a check that cannot fail.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zorg_proto::{Element, Frame};

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' from='localhost' id='x' version='1.0'>";

fn message(id: &str) -> String {
    format!("<message id='{id}'><body>{id}</body></message>")
}

fn has_id(id: &'static str) -> impl Fn(&Element) -> bool {
    move |e| e.attr("id") == Some(id)
}

/// A client whose stream is open, and the fake server's end of the connection.
async fn connected() -> (Client, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tcp, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let mut server = accepted.unwrap().0;
    let mut c = Client::new(Box::new(tcp.unwrap()));
    c.send(&common::header("localhost")).await;
    let mut buf = [0u8; 512];
    let n = server.read(&mut buf).await.unwrap();
    assert!(n > 0);
    server.write_all(HEADER.as_bytes()).await.unwrap();
    assert!(matches!(c.frame().await, Some(Frame::StreamOpen(_))));
    (c, server)
}

/// A connected client, after the fake server wrote `bytes` in one write (so that one read may
/// take all of them).
async fn receiving(bytes: &str) -> (Client, TcpStream) {
    let (c, mut server) = connected().await;
    server.write_all(bytes.as_bytes()).await.unwrap();
    (c, server)
}

const CONFLICT: &str =
    "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>";

#[tokio::test]
async fn stanzas_in_order_pass() {
    let (mut c, _server) = receiving(&format!("{}{}   ", message("a"), message("b"))).await;
    c.expect_next("a", has_id("a")).await;
    c.expect_next("b", has_id("b")).await;
    // Whitespace (a keepalive) is silence.
    c.expect_silence(100).await;
}

#[tokio::test]
#[should_panic(expected = "expected a, got <message")]
async fn expect_next_fails_on_an_extra_stanza() {
    let (mut c, _server) = receiving(&format!("{}{}", message("extra"), message("a"))).await;
    c.expect_next("a", has_id("a")).await;
}

#[tokio::test]
#[should_panic(expected = "expected silence, got <message")]
async fn silence_fails_on_a_stanza_already_in_the_buffer() {
    // One write, so one read takes both: the second waits in the client's buffer, where the
    // old check never looked.
    let (mut c, _server) = receiving(&format!("{}{}", message("a"), message("b"))).await;
    c.expect_next("a", has_id("a")).await;
    c.expect_silence(100).await;
}

#[tokio::test]
#[should_panic(expected = "part of a stanza arrived")]
async fn silence_fails_on_half_a_stanza() {
    let (mut c, _server) = receiving("<message id='a'><bo").await;
    c.expect_silence(300).await;
}

#[tokio::test]
#[should_panic(expected = "expected silence, got <message")]
async fn silence_fails_on_a_stanza_that_comes_late() {
    let (mut c, mut server) = connected().await;
    // The delay is the point: the stanza comes while the client is already waiting.
    let late = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        server.write_all(message("late").as_bytes()).await.unwrap();
        server
    });
    c.expect_silence(2000).await;
    drop(late);
}

#[tokio::test]
#[should_panic(expected = "closed instead of staying quiet")]
async fn silence_fails_when_the_connection_closes() {
    let (mut c, server) = connected().await;
    drop(server);
    c.expect_silence(2000).await;
}

#[tokio::test]
async fn unordered_takes_each_expected_stanza_once_in_any_order() {
    let (mut c, _server) = receiving(&format!("{}{}", message("b"), message("a"))).await;
    let got = c
        .expect_unordered(&[("a", &has_id("a")), ("b", &has_id("b"))])
        .await;
    assert_eq!(got[0].attr("id"), Some("a"));
    assert_eq!(got[1].attr("id"), Some("b"));
}

#[tokio::test]
#[should_panic(expected = "expected one of [\"b\"], got <message")]
async fn unordered_fails_on_a_stanza_nobody_expects() {
    let (mut c, _server) = receiving(&format!("{}{}", message("a"), message("a"))).await;
    c.expect_unordered(&[("a", &has_id("a")), ("b", &has_id("b"))])
        .await;
}

#[tokio::test]
#[should_panic(expected = "expected stream error conflict, got <message")]
async fn a_stream_error_must_come_next() {
    let (mut c, _server) = receiving(&format!("{}{CONFLICT}", message("a"))).await;
    c.expect_stream_error("conflict").await;
}

#[tokio::test]
#[should_panic(expected = "expected the end of the stream, got <message")]
async fn the_stream_must_end_after_its_error() {
    let (mut c, _server) = receiving(&format!("{CONFLICT}{}", message("a"))).await;
    c.expect_stream_error("conflict").await;
}
