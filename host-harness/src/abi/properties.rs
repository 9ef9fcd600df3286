//! Properties: the subset of Envoy's attributes a filter relies on. Strings are raw bytes,
//! integers 8-byte little-endian, maps serialized like header maps (Envoy's encodings).
//!
//! `request.*` exists only while the request is there (request phase and `on_log`), as in
//! Envoy (§3a); `upstream.address` once an upstream answered.

use crate::abi::headers::get_value;
use crate::host::{HostState, Mem, Stream};
use crate::maps;
use crate::types::Status;
use wasmtime::{Caller, Linker};

pub(crate) struct PluginNames<'a> {
    pub name: &'a str,
    pub root_id: &'a str,
    pub vm_id: &'a str,
}

fn int(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn header(h: &crate::types::Headers, name: &str) -> Option<Vec<u8>> {
    get_value(h, name.as_bytes()).map(|v| v.to_vec())
}

pub(crate) fn resolve(
    names: &PluginNames<'_>,
    stream: Option<&Stream>,
    path: &[String],
) -> Option<Vec<u8>> {
    let p: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
    match p.as_slice() {
        ["plugin_name"] => return Some(names.name.as_bytes().to_vec()),
        ["plugin_root_id"] => return Some(names.root_id.as_bytes().to_vec()),
        ["plugin_vm_id"] => return Some(names.vm_id.as_bytes().to_vec()),
        _ => {}
    }
    let s = stream?;
    match p.as_slice() {
        ["cluster_name"] | ["xds", "cluster_name"] => {
            Some(s.props.cluster_name.clone().into_bytes())
        }
        ["connection", "id"] => Some(int(s.props.connection_id as i64)),
        ["source", "address"] => s.props.source.map(|a| a.to_string().into_bytes()),
        ["source", "port"] => s.props.source.map(|a| int(a.port() as i64)),
        ["destination", "address"] => s.props.destination.map(|a| a.to_string().into_bytes()),
        ["destination", "port"] => s.props.destination.map(|a| int(a.port() as i64)),
        ["upstream", "address"] => s.props.upstream_address.clone().map(String::into_bytes),
        ["upstream", "port"] => s
            .props
            .upstream_address
            .as_ref()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<i64>().ok())
            .map(int),
        ["response", "code"] => s.props.response_code.map(|c| int(c as i64)),
        ["response", "headers"] => s.response_headers.as_ref().map(|h| maps::serialize(h)),
        ["response", "headers", name] => s.response_headers.as_ref().and_then(|h| header(h, name)),
        ["request", rest @ ..] => {
            let h = s.request_headers.as_ref()?;
            let path_value = header(h, ":path").unwrap_or_default();
            let (url_path, query) = match path_value.iter().position(|b| *b == b'?') {
                Some(i) => (path_value[..i].to_vec(), path_value[i + 1..].to_vec()),
                None => (path_value.clone(), Vec::new()),
            };
            match rest {
                ["path"] => Some(path_value),
                ["url_path"] => Some(url_path),
                ["query"] => Some(query),
                ["host"] => header(h, ":authority"),
                ["method"] => header(h, ":method"),
                ["scheme"] => Some(header(h, ":scheme").unwrap_or_else(|| b"http".to_vec())),
                ["protocol"] => {
                    Some(s.props.protocol.as_bytes().to_vec()).filter(|p| !p.is_empty())
                }
                ["id"] => header(h, "x-request-id"),
                ["useragent"] => header(h, "user-agent"),
                ["referer"] => header(h, "referer"),
                ["headers"] => Some(maps::serialize(h)),
                ["headers", name] => header(h, name),
                _ => None,
            }
        }
        _ => None,
    }
}

pub(crate) fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Caller<'_, HostState>,
         path_ptr: u32,
         path_len: u32,
         ptr_ptr: u32,
         size_ptr: u32|
         -> wasmtime::Result<u32> {
            let raw = match Mem::read(&mut caller, path_ptr, path_len) {
                Ok(p) => p,
                Err(s) => return Ok(s.code()),
            };
            let path = maps::property_path(&raw);
            let state = caller.data();
            let names = PluginNames {
                name: &state.env.name,
                root_id: &state.env.root_id,
                vm_id: &state.env.vm_id,
            };
            let key = path.join(".");
            let value = resolve(&names, state.stream(), &path).or_else(|| match state.stream() {
                Some(s) => s.properties.get(&key).cloned(),
                None => state.root_properties.get(&key).cloned(),
            });
            match value {
                Some(v) => Ok(Mem::return_bytes(&mut caller, &v, ptr_ptr, size_ptr)?.code()),
                None => Ok(Status::NotFound.code()),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut caller: Caller<'_, HostState>,
         path_ptr: u32,
         path_len: u32,
         val_ptr: u32,
         val_len: u32|
         -> u32 {
            let r = (|| {
                let path = maps::property_path(&Mem::read(&mut caller, path_ptr, path_len)?);
                let value = Mem::read(&mut caller, val_ptr, val_len)?;
                let state = caller.data_mut();
                let key = path.join(".");
                match state.stream_mut() {
                    Some(s) => s.properties.insert(key, value),
                    None => state.root_properties.insert(key, value),
                };
                Ok(Status::Ok)
            })();
            match r {
                Ok(s) | Err(s) => s.code(),
            }
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::StreamProps;

    fn stream(request: Option<&[(&str, &str)]>) -> Stream {
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        Stream {
            request_headers: request.map(|h| {
                h.iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect()
            }),
            saved_request_headers: Vec::new(),
            request_body: Vec::new(),
            request_trailers: None,
            response_headers: None,
            response_body: Vec::new(),
            response_trailers: None,
            props: StreamProps {
                upstream_address: Some("127.0.0.1:9000".into()),
                cluster_name: "upstream".into(),
                ..Default::default()
            },
            root: 1,
            in_log: false,
            events,
            local_reply_sent: false,
            awaiting_done: false,
            properties: Default::default(),
        }
    }

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(String::from).collect()
    }

    const NAMES: PluginNames<'static> = PluginNames {
        name: "p",
        root_id: "r",
        vm_id: "v",
    };

    #[test]
    fn request_properties_exist_only_with_the_request() {
        let s = stream(Some(&[
            (":path", "/a?b=1"),
            (":method", "POST"),
            ("x-k", "v"),
        ]));
        assert_eq!(
            resolve(&NAMES, Some(&s), &path("request.path")),
            Some(b"/a?b=1".to_vec())
        );
        assert_eq!(
            resolve(&NAMES, Some(&s), &path("request.url_path")),
            Some(b"/a".to_vec())
        );
        assert_eq!(
            resolve(&NAMES, Some(&s), &path("request.query")),
            Some(b"b=1".to_vec())
        );
        assert_eq!(
            resolve(&NAMES, Some(&s), &path("request.method")),
            Some(b"POST".to_vec())
        );
        assert_eq!(
            resolve(
                &NAMES,
                Some(&s),
                &["request".into(), "headers".into(), "x-k".into()]
            ),
            Some(b"v".to_vec())
        );
        let gone = stream(None);
        assert_eq!(resolve(&NAMES, Some(&gone), &path("request.path")), None);
    }

    #[test]
    fn plugin_and_upstream_properties() {
        let s = stream(None);
        assert_eq!(
            resolve(&NAMES, None, &path("plugin_root_id")),
            Some(b"r".to_vec())
        );
        assert_eq!(
            resolve(&NAMES, None, &path("plugin_vm_id")),
            Some(b"v".to_vec())
        );
        assert_eq!(
            resolve(&NAMES, Some(&s), &path("upstream.address")),
            Some(b"127.0.0.1:9000".to_vec())
        );
        assert_eq!(
            resolve(&NAMES, Some(&s), &path("upstream.port")),
            Some(9000i64.to_le_bytes().to_vec())
        );
        assert_eq!(resolve(&NAMES, None, &path("upstream.address")), None);
        assert_eq!(resolve(&NAMES, Some(&s), &path("no.such")), None);
    }
}
