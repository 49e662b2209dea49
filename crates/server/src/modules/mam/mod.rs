//! XEP-0313 Message Archive Management for accounts (`urn:xmpp:mam:2` and `#extended`): archive
//! queries with XEP-0059 paging, the query form, archiving preferences and archive metadata.
//!
//! The archive itself is written on the message path ([`archiving`]); this module answers the
//! account's own client. Results go to the querying session only, each in a `<message/>` with
//! the stored stanza forwarded (XEP-0297) and stamped (XEP-0203), then the IQ result with `<fin/>`.

pub mod archiving;
pub mod form;
pub mod retention;

use crate::audit::Event;
use crate::audit::event::cut;
use crate::audit::record::timestamp;
use std::sync::Arc;

use zorg_proto::jid::Jid;
use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

use crate::cache::Loaded;
use crate::server::Server;
use crate::session::Ctx;
use crate::storage::StorageError;
use crate::storage::archive::{PrefMode, Prefs};

/// Most JIDs in one preference list.
const MAX_PREF_JIDS: usize = 1000;

use crate::modules::datetime as stamp;

fn internal(e: StorageError) -> StanzaError {
    tracing::error!(error = %e, "archive operation failed");
    StanzaError::new(StanzaCondition::InternalServerError)
}

/// The account's preferences: cached, read from storage once, the server default otherwise.
/// Only accounts that exist are cached (a message to a made-up address must not take a place),
/// and a read that fails is used once, not kept.
pub async fn prefs(server: &Arc<Server>, owner: &str) -> Arc<Prefs> {
    let default = || Prefs {
        default: server.config.archive.default,
        always: Vec::new(),
        never: Vec::new(),
    };
    let load = async {
        match crate::storage::AccountStore::account_exists(&server.storage, owner).await {
            Ok(true) => {}
            Ok(false) => {
                return Loaded {
                    value: default(),
                    cache: false,
                };
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading archive preferences failed; using the default");
                return Loaded {
                    value: default(),
                    cache: false,
                };
            }
        }
        match server.storage.archive_prefs(owner).await {
            Ok(p) => Loaded {
                value: p.unwrap_or_else(default),
                cache: true,
            },
            Err(e) => {
                tracing::warn!(error = %e, "reading archive preferences failed; using the default");
                Loaded {
                    value: default(),
                    cache: false,
                }
            }
        }
    };
    server.archive_prefs.get_or_load(owner, load).await
}

/// An IQ in `urn:xmpp:mam:2` from the account's own client.
pub async fn handle_iq(ctx: &mut Ctx<'_>, el: Element) {
    let Some(p) = el.children().next() else {
        return;
    };
    let ty = el.attr("type").unwrap_or("");
    let r = match (p.name(), ty) {
        ("query", "get") => Ok(Some(form::form())),
        ("query", "set") => query(ctx, &el).await,
        ("prefs", "get") => Ok(Some(prefs_element(&*prefs(ctx.server, ctx.bare()).await))),
        ("prefs", "set") => set_prefs(ctx, p).await,
        ("metadata", "get") => metadata(ctx).await,
        _ => Err(StanzaError::new(StanzaCondition::ServiceUnavailable)),
    };
    ctx.answer(&el, r);
}

async fn query(ctx: &mut Ctx<'_>, el: &Element) -> Result<Option<Element>, StanzaError> {
    let Some(q) = el.children().next() else {
        return Err(StanzaError::new(StanzaCondition::BadRequest));
    };
    let q = form::parse(q)?;
    let owner = ctx.bare().to_owned();
    // Every stanza-id a client has seen is queryable: what is queued is committed first (one
    // group commit, shared with the other writers).
    if let Err(e) = ctx.server.storage.barrier().await {
        return Err(internal(e));
    }
    let page = match ctx.server.storage.query_archive(&owner, &q.archive).await {
        Ok(p) => p,
        Err(StorageError::NotFound) => {
            return Err(StanzaError::new(StanzaCondition::ItemNotFound)
                .with_text("no message in the archive has that id"));
        }
        Err(e) => return Err(internal(e)),
    };
    // NEN 7513: reading an archive is access to personal data; unrecorded, it is not served.
    let ev = Event::ArchiveQueried {
        by: ctx.full().to_owned(),
        archive: owner.clone(),
        with: q.archive.with.as_ref().map(|(bare, res)| match res {
            Some(r) => cut(&format!("{bare}/{r}")),
            None => cut(bare),
        }),
        start: q.archive.start.map(timestamp),
        end: q.archive.end.map(timestamp),
        results: u32::try_from(page.entries.len()).unwrap_or(u32::MAX),
    };
    if ctx.server.audit.record(ev).await.is_err() {
        return Err(StanzaError::new(StanzaCondition::InternalServerError)
            .with_text("the server cannot record archive reads at the moment; try again later"));
    }
    let mut entries = page.entries;
    if q.flip {
        entries.reverse();
    }
    for e in &entries {
        let stored = match crate::storage::parse_stored(&e.stanza) {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(error = %err, id = %e.id, "archived message unreadable; skipped");
                continue;
            }
        };
        let mut result = Element::new("result", ns::MAM).with_attr("id", e.id.as_str());
        if let Some(qid) = &q.queryid {
            result.set_attr("queryid", qid.as_str());
        }
        result.push_child(
            Element::new("forwarded", ns::FORWARD)
                .with_child(
                    Element::new("delay", ns::DELAY).with_attr("stamp", stamp(e.stamp_unix_ms)),
                )
                .with_child(stored),
        );
        ctx.to_self.push(
            Element::new("message", ns::CLIENT)
                .with_attr("from", owner.as_str())
                .with_attr("to", ctx.full())
                .with_attr("id", crate::storage::new_id())
                .with_child(result),
        );
    }
    let mut set = Element::new("set", ns::RSM);
    // `first` and `last` name the page's ends in archive order, whatever the display order.
    let (first, last) = if q.flip {
        (entries.last(), entries.first())
    } else {
        (entries.first(), entries.last())
    };
    if let (Some(first), Some(last)) = (first, last) {
        let mut f = Element::new("first", ns::RSM).with_text(first.id.as_str());
        if let Some(i) = page.first_index {
            f.set_attr("index", i.to_string());
        }
        set.push_child(f);
        set.push_child(Element::new("last", ns::RSM).with_text(last.id.as_str()));
    }
    set.push_child(Element::new("count", ns::RSM).with_text(page.count.to_string()));
    let mut fin = Element::new("fin", ns::MAM);
    if let Some(qid) = &q.queryid {
        fin.set_attr("queryid", qid.as_str());
    }
    if page.complete {
        fin.set_attr("complete", "true");
    }
    fin.push_child(set);
    Ok(Some(fin))
}

fn prefs_element(p: &Prefs) -> Element {
    let list = |name: &str, jids: &[String]| {
        let mut l = Element::new(name, ns::MAM);
        for j in jids {
            l.push_child(Element::new("jid", ns::MAM).with_text(j.as_str()));
        }
        l
    };
    Element::new("prefs", ns::MAM)
        .with_attr("default", p.default.as_str())
        .with_child(list("always", &p.always))
        .with_child(list("never", &p.never))
}

fn parse_prefs(el: &Element) -> Result<Prefs, StanzaError> {
    let bad = |t: &str| StanzaError::new(StanzaCondition::BadRequest).with_text(t);
    let default = el
        .attr("default")
        .and_then(PrefMode::parse)
        .ok_or_else(|| bad("default must be always, never or roster"))?;
    let mut p = Prefs {
        default,
        always: Vec::new(),
        never: Vec::new(),
    };
    for list in el.children() {
        let target = match (list.ns(), list.name()) {
            (ns::MAM, "always") => &mut p.always,
            (ns::MAM, "never") => &mut p.never,
            _ => return Err(bad("prefs holds only always and never")),
        };
        for j in list.children() {
            if !j.is("jid", ns::MAM) {
                return Err(bad("always and never hold only jid elements"));
            }
            let jid = Jid::new(j.text().trim()).map_err(|_| {
                StanzaError::new(StanzaCondition::JidMalformed).with_text("not a valid JID")
            })?;
            target.push(jid.to_bare().to_string());
        }
    }
    if p.always.len() + p.never.len() > MAX_PREF_JIDS {
        return Err(StanzaError::new(StanzaCondition::NotAcceptable)
            .with_text("too many JIDs in the archiving preferences"));
    }
    for l in [&mut p.always, &mut p.never] {
        l.sort_unstable();
        l.dedup();
    }
    Ok(p)
}

async fn set_prefs(ctx: &mut Ctx<'_>, el: &Element) -> Result<Option<Element>, StanzaError> {
    let p = parse_prefs(el)?;
    ctx.server
        .storage
        .set_archive_prefs(ctx.bare(), &p)
        .await
        .map_err(internal)?;
    // Invalidated, not replaced: two sessions setting preferences at once would otherwise
    // race to put their own in the cache; the next read loads what storage holds.
    ctx.server.archive_prefs.invalidate(ctx.bare());
    Ok(Some(prefs_element(&p)))
}

async fn metadata(ctx: &mut Ctx<'_>) -> Result<Option<Element>, StanzaError> {
    let mut m = Element::new("metadata", ns::MAM);
    let bounds = ctx
        .server
        .storage
        .archive_bounds(ctx.bare())
        .await
        .map_err(internal)?;
    if let Some(((fid, fs), (lid, ls))) = bounds {
        m.push_child(
            Element::new("start", ns::MAM)
                .with_attr("id", fid)
                .with_attr("timestamp", stamp(fs)),
        );
        m.push_child(
            Element::new("end", ns::MAM)
                .with_attr("id", lid)
                .with_attr("timestamp", stamp(ls)),
        );
    }
    Ok(Some(m))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn prefs_round_trip_and_limits() {
        let el = zorg_proto::parse_element(
            "<prefs xmlns='urn:xmpp:mam:2' default='roster'><always><jid>b@x/r</jid>\
             <jid>a@x</jid></always><never><jid>c@x</jid></never></prefs>",
            zorg_proto::Limits::default(),
        )
        .unwrap();
        let p = parse_prefs(&el).unwrap();
        assert_eq!(p.default, PrefMode::Roster);
        assert_eq!(p.always, ["a@x", "b@x"]);
        assert_eq!(p.never, ["c@x"]);
        assert_eq!(parse_prefs(&prefs_element(&p)).unwrap(), p);
        let bad = zorg_proto::parse_element(
            "<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>",
            zorg_proto::Limits::default(),
        )
        .unwrap();
        assert_eq!(
            parse_prefs(&bad).unwrap_err().condition,
            StanzaCondition::BadRequest
        );
        let cond = |xml: &str| {
            let el = zorg_proto::parse_element(xml, zorg_proto::Limits::default()).unwrap();
            parse_prefs(&el).unwrap_err().condition
        };
        assert_eq!(
            cond("<prefs xmlns='urn:xmpp:mam:2'/>"),
            StanzaCondition::BadRequest
        );
        assert_eq!(
            cond(
                "<prefs xmlns='urn:xmpp:mam:2' default='always'><always><jid>@@</jid></always></prefs>"
            ),
            StanzaCondition::JidMalformed
        );
        assert_eq!(
            cond("<prefs xmlns='urn:xmpp:mam:2' default='always'><always><item/></always></prefs>"),
            StanzaCondition::BadRequest
        );
        assert_eq!(
            cond("<prefs xmlns='urn:xmpp:mam:2' default='always'><sometimes/></prefs>"),
            StanzaCondition::BadRequest
        );
        let many: String = (0..=MAX_PREF_JIDS)
            .map(|i| format!("<jid>u{i}@x</jid>"))
            .collect();
        assert_eq!(
            cond(&format!(
                "<prefs xmlns='urn:xmpp:mam:2' default='always'><never>{many}</never></prefs>"
            )),
            StanzaCondition::NotAcceptable
        );
    }
}
