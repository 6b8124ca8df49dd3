//! The preview-1 ABI of the host capabilities: the core import module
//! `warden` (pointers and lengths as `i32`, an `i32` status code as the
//! result, see docs/host.md), and the gating of WASI preview 1's clocks and
//! randomness by `clock:read` and `random:read`.
//!
//! Every guest pointer is checked against the guest's exported `memory`
//! through wasmtime's memory API; a bad pointer is `INVALID`, never a trap.

use std::ops::Range;

use warden_policy::Capability;
use wasmtime::{AsContextMut, Caller, Extern, Linker, Memory};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as wasi_p1, WasiSnapshotPreview1};
use wasmtime_wasi::p1::WasiP1Ctx;
use wiggle::GuestMemory;

use super::{call, http, kv, log, secret, HostCode, HostError, MAX_METHOD, MAX_NAME, P1_MODULE};
use crate::run::RunState;

/// The WASI preview-1 module.
const WASI: &str = "wasi_snapshot_preview1";
/// WASI preview 1's `errno` for "not permitted by capabilities".
pub const ERRNO_NOTCAPABLE: i32 = 76;
/// Size of a preview-1 `subscription`, and where its tag is.
const SUBSCRIPTION_SIZE: usize = 48;
const SUBSCRIPTION_TAG: usize = 8;
/// Tag of a clock subscription.
const EVENTTYPE_CLOCK: u8 = 0;

type Ctx<'a> = Caller<'a, RunState>;

fn status(r: Result<i32, HostError>) -> i32 {
    r.unwrap_or_else(|e| e.code() as i32)
}

fn invalid(what: &str) -> HostError {
    HostError::Invalid(what.to_string())
}

/// The guest's exported linear memory.
fn memory(caller: &mut Ctx<'_>) -> Result<Memory, HostError> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(invalid(
            "the module exports no linear memory named `memory`",
        )),
    }
}

/// The range `ptr..ptr+len` of guest memory, checked.
fn range(caller: &Ctx<'_>, mem: &Memory, ptr: i32, len: usize) -> Result<Range<usize>, HostError> {
    let start = ptr as u32 as usize;
    let end = start
        .checked_add(len)
        .filter(|end| *end <= mem.data_size(caller))
        .ok_or_else(|| invalid("pointer and length outside the guest's memory"))?;
    Ok(start..end)
}

/// Copies `len` bytes at `ptr` (at most `max`, else `TooLarge`).
fn read(
    caller: &Ctx<'_>,
    mem: &Memory,
    ptr: i32,
    len: i32,
    max: usize,
) -> Result<Vec<u8>, HostError> {
    let len = len as u32 as usize;
    if len > max {
        return Err(HostError::TooLarge(format!(
            "argument of {len} bytes (at most {max})"
        )));
    }
    let r = range(caller, mem, ptr, len)?;
    Ok(mem.data(caller)[r].to_vec())
}

fn read_str(
    caller: &Ctx<'_>,
    mem: &Memory,
    ptr: i32,
    len: i32,
    max: usize,
) -> Result<String, HostError> {
    String::from_utf8(read(caller, mem, ptr, len, max)?)
        .map_err(|_| invalid("a string argument is not UTF-8"))
}

fn write(caller: &mut Ctx<'_>, mem: &Memory, ptr: i32, bytes: &[u8]) -> Result<(), HostError> {
    mem.write(caller, ptr as u32 as usize, bytes)
        .map_err(|_| invalid("output pointer outside the guest's memory"))
}

fn write_u32(caller: &mut Ctx<'_>, mem: &Memory, ptr: i32, v: u32) -> Result<(), HostError> {
    write(caller, mem, ptr, &v.to_le_bytes())
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Writes `bytes` into the guest's buffer `buf` of `cap` bytes and their
/// length to `len_out`. If they do not fit, writes what fits and returns
/// `BufferTooSmall` (the length written is the full length).
fn deliver(
    caller: &mut Ctx<'_>,
    mem: &Memory,
    buf: i32,
    cap: i32,
    len_out: i32,
    bytes: &[u8],
) -> Result<i32, HostError> {
    let n = bytes.len().min(cap as u32 as usize);
    range(caller, mem, buf, n)?;
    range(caller, mem, len_out, 4)?;
    write(caller, mem, buf, &bytes[..n])?;
    write_u32(caller, mem, len_out, len_u32(bytes.len()))?;
    Ok(if n < bytes.len() {
        HostCode::BufferTooSmall as i32
    } else {
        HostCode::Ok as i32
    })
}

/// Like [`deliver`] for a result the guest can ask for again: if it does
/// not fit, only its length is written.
fn deliver_or_size(
    caller: &mut Ctx<'_>,
    mem: &Memory,
    buf: i32,
    cap: i32,
    len_out: i32,
    bytes: &[u8],
) -> Result<i32, HostError> {
    if bytes.len() > cap as u32 as usize {
        write_u32(caller, mem, len_out, len_u32(bytes.len()))?;
        return Ok(HostCode::BufferTooSmall as i32);
    }
    deliver(caller, mem, buf, cap, len_out, bytes)
}

/// Parses `Name: value` lines (`\n` or `\r\n`).
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, HostError> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid("a header line without ':'"))?;
        out.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(out)
}

/// `kv_list`'s page encoding: `u32 count`, `u32 more`, then per key
/// `u32 length` and its bytes (all little-endian).
fn encode_page(page: &kv::KeyPage) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + page.keys.iter().map(|k| 4 + k.len()).sum::<usize>());
    out.extend_from_slice(&len_u32(page.keys.len()).to_le_bytes());
    out.extend_from_slice(&u32::from(page.more).to_le_bytes());
    for k in &page.keys {
        out.extend_from_slice(&len_u32(k.len()).to_le_bytes());
        out.extend_from_slice(k);
    }
    out
}

/// Adds the `warden` import module and the gated WASI functions to a
/// linker that already has WASI preview 1.
pub(crate) fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    add_warden(linker)?;
    gate_wasi(linker)?;
    gate_poll(linker)
}

/// What the synchronous linker (runs that cannot block, see
/// [`crate::module::SYNC_IMPORTS`]) adds to WASI preview 1: `warden.log`,
/// `warden.secret` (a lease check reads one small local file) and the
/// same gated clocks and randomness. `poll_oneoff` can wait, so it
/// is never reached this way; it is replaced by a trap all the same.
pub(crate) fn add_to_sync_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    add_log(linker)?;
    add_secret(linker)?;
    gate_wasi(linker)?;
    linker.allow_shadowing(true);
    linker.func_wrap(
        WASI,
        "poll_oneoff",
        |_: i32, _: i32, _: i32, _: i32| -> wasmtime::Result<i32> {
            Err(wasmtime::Error::msg(
                "poll_oneoff is not available to a run that may not block",
            ))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn log_call(caller: &mut Ctx<'_>, level: i32, ptr: i32, len: i32) -> Result<i32, HostError> {
    let mem = memory(caller)?;
    let level = log::level_of(level).ok_or_else(|| invalid("log level (0-4)"))?;
    let r = range(caller, &mem, ptr, len as u32 as usize)?;
    let limit = caller.data().host.log.read_limit();
    let more = r.len() > limit;
    let raw = mem.data(&*caller)[r.start..r.start + r.len().min(limit)].to_vec();
    log::write(&mut caller.data_mut().host, "warden.log", level, &raw, more)?;
    Ok(HostCode::Ok as i32)
}

fn secret_call(
    caller: &mut Ctx<'_>,
    name: i32,
    name_len: i32,
    buf: i32,
    buf_cap: i32,
    len_out: i32,
) -> Result<i32, HostError> {
    let mem = memory(caller)?;
    let name = read_str(caller, &mem, name, name_len, MAX_NAME)?;
    // A bad length pointer fails before the lease is checked.
    range(caller, &mem, len_out, 4)?;
    let value = secret::read(&mut caller.data_mut().host, "warden.secret", &name)?;
    deliver_or_size(caller, &mem, buf, buf_cap, len_out, &value)
}

#[allow(clippy::too_many_arguments)]
fn kv_get_call(
    caller: &mut Ctx<'_>,
    ns: i32,
    ns_len: i32,
    key: i32,
    key_len: i32,
    buf: i32,
    buf_cap: i32,
    len_out: i32,
) -> Result<i32, HostError> {
    let mem = memory(caller)?;
    let ns = read_str(caller, &mem, ns, ns_len, MAX_NAME)?;
    let key = read(caller, &mem, key, key_len, kv::MAX_KEY_BYTES)?;
    match kv::get(&mut caller.data_mut().host, "warden.kv_get", &ns, &key)? {
        Some(value) => deliver_or_size(caller, &mem, buf, buf_cap, len_out, &value),
        None => Ok(HostCode::NotFound as i32),
    }
}

fn kv_set_call(
    caller: &mut Ctx<'_>,
    ns: i32,
    ns_len: i32,
    key: i32,
    key_len: i32,
    value: i32,
    value_len: i32,
) -> Result<i32, HostError> {
    let mem = memory(caller)?;
    let ns = read_str(caller, &mem, ns, ns_len, MAX_NAME)?;
    let key = read(caller, &mem, key, key_len, kv::MAX_KEY_BYTES)?;
    let value = read(caller, &mem, value, value_len, kv::MAX_VALUE_BYTES)?;
    kv::set(
        &mut caller.data_mut().host,
        "warden.kv_set",
        &ns,
        &key,
        &value,
    )?;
    Ok(HostCode::Ok as i32)
}

fn kv_delete_call(
    caller: &mut Ctx<'_>,
    ns: i32,
    ns_len: i32,
    key: i32,
    key_len: i32,
) -> Result<i32, HostError> {
    let mem = memory(caller)?;
    let ns = read_str(caller, &mem, ns, ns_len, MAX_NAME)?;
    let key = read(caller, &mem, key, key_len, kv::MAX_KEY_BYTES)?;
    let existed = kv::delete(&mut caller.data_mut().host, "warden.kv_delete", &ns, &key)?;
    Ok(if existed {
        HostCode::Ok as i32
    } else {
        HostCode::NotFound as i32
    })
}

#[allow(clippy::too_many_arguments)]
fn kv_list_call(
    caller: &mut Ctx<'_>,
    ns: i32,
    ns_len: i32,
    prefix: i32,
    prefix_len: i32,
    after: i32,
    after_len: i32,
    buf: i32,
    buf_cap: i32,
    len_out: i32,
) -> Result<i32, HostError> {
    let mem = memory(caller)?;
    let ns = read_str(caller, &mem, ns, ns_len, MAX_NAME)?;
    let prefix = read(caller, &mem, prefix, prefix_len, kv::MAX_KEY_BYTES)?;
    let after = read(caller, &mem, after, after_len, kv::MAX_KEY_BYTES)?;
    let after = (!after.is_empty()).then_some(after.as_slice());
    let page = kv::list(
        &mut caller.data_mut().host,
        "warden.kv_list",
        &ns,
        &prefix,
        after,
    )?;
    deliver_or_size(caller, &mem, buf, buf_cap, len_out, &encode_page(&page))
}

/// The twelve `i32` parameters of `http_request`.
type HttpParams = (i32, i32, i32, i32, i32, i32, i32, i32, i32, i32, i32, i32);

/// Reads `http_request`'s arguments.
fn http_args(caller: &mut Ctx<'_>, p: HttpParams) -> Result<(Memory, http::Request), HostError> {
    let (
        method,
        method_len,
        url,
        url_len,
        headers,
        headers_len,
        body,
        body_len,
        _,
        _,
        len_out,
        status_out,
    ) = p;
    let mem = memory(caller)?;
    let method = read_str(caller, &mem, method, method_len, MAX_METHOD)?;
    let url = read_str(caller, &mem, url, url_len, http::MAX_URL_BYTES)?;
    let headers = read_str(caller, &mem, headers, headers_len, http::MAX_HEADER_BYTES)?;
    let max_body = caller.data().host.shared()?.http.max_request_bytes;
    let body = read(caller, &mem, body, body_len, max_body)?;
    range(caller, &mem, status_out, 4)?;
    range(caller, &mem, len_out, 4)?;
    Ok((
        mem,
        http::Request {
            method,
            url,
            headers: parse_headers(&headers)?,
            body,
        },
    ))
}

/// The eight `i32` parameters of `call`.
type CallParams = (i32, i32, i32, i32, i32, i32, i32, i32);

/// Reads `call`'s arguments.
fn call_args(caller: &mut Ctx<'_>, p: CallParams) -> Result<(Memory, String, Vec<u8>), HostError> {
    let (name, name_len, input, input_len, _, _, len_out, exit_out) = p;
    let mem = memory(caller)?;
    let name = read_str(caller, &mem, name, name_len, MAX_NAME)?;
    let input = read(caller, &mem, input, input_len, call::MAX_INPUT_BYTES)?;
    range(caller, &mem, exit_out, 4)?;
    range(caller, &mem, len_out, 4)?;
    Ok((mem, name, input))
}

fn add_log(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        P1_MODULE,
        "log",
        |mut caller: Ctx<'_>, level: i32, ptr: i32, len: i32| -> i32 {
            status(log_call(&mut caller, level, ptr, len))
        },
    )?;
    Ok(())
}

fn add_secret(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        P1_MODULE,
        "secret",
        |mut caller: Ctx<'_>,
         name: i32,
         name_len: i32,
         buf: i32,
         buf_cap: i32,
         len_out: i32|
         -> i32 {
            status(secret_call(
                &mut caller,
                name,
                name_len,
                buf,
                buf_cap,
                len_out,
            ))
        },
    )?;
    Ok(())
}

fn add_warden(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    add_log(linker)?;
    add_secret(linker)?;
    linker.func_wrap(
        P1_MODULE,
        "kv_get",
        |mut caller: Ctx<'_>,
         ns: i32,
         ns_len: i32,
         key: i32,
         key_len: i32,
         buf: i32,
         buf_cap: i32,
         len_out: i32|
         -> i32 {
            status(kv_get_call(
                &mut caller,
                ns,
                ns_len,
                key,
                key_len,
                buf,
                buf_cap,
                len_out,
            ))
        },
    )?;
    linker.func_wrap(
        P1_MODULE,
        "kv_set",
        |mut caller: Ctx<'_>,
         ns: i32,
         ns_len: i32,
         key: i32,
         key_len: i32,
         value: i32,
         value_len: i32|
         -> i32 {
            status(kv_set_call(
                &mut caller,
                ns,
                ns_len,
                key,
                key_len,
                value,
                value_len,
            ))
        },
    )?;
    linker.func_wrap(
        P1_MODULE,
        "kv_delete",
        |mut caller: Ctx<'_>, ns: i32, ns_len: i32, key: i32, key_len: i32| -> i32 {
            status(kv_delete_call(&mut caller, ns, ns_len, key, key_len))
        },
    )?;
    linker.func_wrap(
        P1_MODULE,
        "kv_list",
        |mut caller: Ctx<'_>,
         ns: i32,
         ns_len: i32,
         prefix: i32,
         prefix_len: i32,
         after: i32,
         after_len: i32,
         buf: i32,
         buf_cap: i32,
         len_out: i32|
         -> i32 {
            status(kv_list_call(
                &mut caller,
                ns,
                ns_len,
                prefix,
                prefix_len,
                after,
                after_len,
                buf,
                buf_cap,
                len_out,
            ))
        },
    )?;
    linker.func_wrap_async(
        P1_MODULE,
        "http_request",
        |mut caller: Ctx<'_>, params: HttpParams| {
            Box::new(async move {
                let (_, _, _, _, _, _, _, _, buf, buf_cap, len_out, status_out) = params;
                let (mem, request) = match http_args(&mut caller, params) {
                    Ok(a) => a,
                    Err(e) => return Ok(e.code() as i32),
                };
                let sent =
                    http::send(&mut caller.data_mut().host, "warden.http_request", request).await;
                let result = sent.and_then(|response| {
                    write_u32(&mut caller, &mem, status_out, u32::from(response.status))?;
                    deliver(&mut caller, &mem, buf, buf_cap, len_out, &response.body)
                });
                Ok(status(result))
            })
        },
    )?;
    linker.func_wrap_async(
        P1_MODULE,
        "call",
        |mut caller: Ctx<'_>, params: CallParams| {
            Box::new(async move {
                let (_, _, _, _, buf, buf_cap, len_out, exit_out) = params;
                let (mem, name, input) = match call_args(&mut caller, params) {
                    Ok(a) => a,
                    Err(e) => return Ok(e.code() as i32),
                };
                let reply = call::invoke(&mut caller, "warden.call", &name, input).await?;
                let result = reply.and_then(|reply| {
                    write_u32(&mut caller, &mem, exit_out, reply.exit_code as u32)?;
                    deliver(&mut caller, &mem, buf, buf_cap, len_out, &reply.output)
                });
                Ok(status(result))
            })
        },
    )?;
    Ok(())
}

/// Refuses a call for want of `cap`: recorded, and `NOTCAPABLE` for the
/// guest.
fn refuse(caller: &mut Ctx<'_>, function: &'static str, cap: Capability) -> i32 {
    let _ = caller.data_mut().host.deny(function, cap.to_string());
    ERRNO_NOTCAPABLE
}

/// Gives wasmtime-wasi's own preview-1 implementation (`WasiP1Ctx` and the
/// guest's memory) to `f`, as its generated glue would.
fn with_wasi<R>(
    caller: &mut Ctx<'_>,
    f: impl FnOnce(&mut WasiP1Ctx, &mut GuestMemory<'_>) -> wasmtime::Result<R>,
) -> wasmtime::Result<R> {
    let fuel = caller.as_context_mut().hostcall_fuel();
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => {
            let (mem, state) = m.data_and_store_mut(caller);
            state.wasi.set_hostcall_fuel(fuel);
            f(&mut state.wasi, &mut GuestMemory::Unshared(mem))
        }
        Some(Extern::SharedMemory(m)) => {
            let state = caller.data_mut();
            state.wasi.set_hostcall_fuel(fuel);
            f(&mut state.wasi, &mut GuestMemory::Shared(m.data()))
        }
        _ => Err(wasmtime::Error::msg("missing required memory export")),
    }
}

/// Replaces `clock_time_get`, `clock_res_get` and `random_get` with
/// versions that check `clock:read` / `random:read` and then run
/// wasmtime-wasi's own (which honours `--deterministic`).
fn gate_wasi(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    /// Shadows WASI function `$name` with one that refuses (recording the
    /// denial) without `$cap`, else calls wasmtime-wasi's `$name`.
    macro_rules! gated {
        ($name:ident, $cap:expr, ($($arg:ident: $ty:ty),*)) => {
            linker.func_wrap(
                WASI,
                stringify!($name),
                |mut caller: Ctx<'_>, $($arg: $ty),*| -> wasmtime::Result<i32> {
                    if !caller.data().host.has(&$cap) {
                        return Ok(refuse(
                            &mut caller,
                            concat!("wasi_snapshot_preview1.", stringify!($name)),
                            $cap,
                        ));
                    }
                    with_wasi(&mut caller, |ctx, mem| wasi_p1::$name(ctx, mem, $($arg),*))
                },
            )?
        };
    }
    linker.allow_shadowing(true);
    gated!(clock_time_get, Capability::ClockRead, (id: i32, precision: i64, out: i32));
    gated!(clock_res_get, Capability::ClockRead, (id: i32, out: i32));
    gated!(random_get, Capability::RandomRead, (buf: i32, len: i32));
    linker.allow_shadowing(false);
    Ok(())
}

/// Replaces `poll_oneoff` with a version that, without `clock:read`,
/// refuses subscriptions to a clock, and then runs wasmtime-wasi's own.
fn gate_poll(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.func_wrap_async(
        WASI,
        "poll_oneoff",
        |mut caller: Ctx<'_>, (subs, events, n, n_out): (i32, i32, i32, i32)| {
            Box::new(async move {
                if !caller.data().host.has(&Capability::ClockRead)
                    && waits_on_a_clock(&mut caller, subs, n)
                {
                    return Ok(refuse(
                        &mut caller,
                        "wasi_snapshot_preview1.poll_oneoff",
                        Capability::ClockRead,
                    ));
                }
                let fuel = caller.as_context_mut().hostcall_fuel();
                match caller.get_export("memory") {
                    Some(Extern::Memory(m)) => {
                        let (mem, state) = m.data_and_store_mut(&mut caller);
                        state.wasi.set_hostcall_fuel(fuel);
                        let mut mem = GuestMemory::Unshared(mem);
                        wasi_p1::poll_oneoff(&mut state.wasi, &mut mem, subs, events, n, n_out)
                            .await
                    }
                    Some(Extern::SharedMemory(m)) => {
                        let state = caller.data_mut();
                        state.wasi.set_hostcall_fuel(fuel);
                        let mut mem = GuestMemory::Shared(m.data());
                        wasi_p1::poll_oneoff(&mut state.wasi, &mut mem, subs, events, n, n_out)
                            .await
                    }
                    _ => Err(wasmtime::Error::msg("missing required memory export")),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// True if one of the `n` subscriptions at `subs` is a clock. Unreadable
/// subscriptions are left to wasmtime-wasi to refuse (it reads the same
/// bytes, and fails on the same bounds). A shared memory (which another
/// thread could change between this check and wasmtime-wasi's read) counts
/// as a clock: without `clock:read`, no `poll_oneoff` on a shared memory.
fn waits_on_a_clock(caller: &mut Ctx<'_>, subs: i32, n: i32) -> bool {
    let mem = match caller.get_export("memory") {
        Some(Extern::Memory(m)) => m,
        Some(Extern::SharedMemory(_)) => return true,
        _ => return false,
    };
    let Some(len) = (n as u32 as usize).checked_mul(SUBSCRIPTION_SIZE) else {
        return false;
    };
    let Ok(r) = range(caller, &mem, subs, len) else {
        return false;
    };
    mem.data(&*caller)[r]
        .chunks_exact(SUBSCRIPTION_SIZE)
        .any(|s| s[SUBSCRIPTION_TAG] == EVENTTYPE_CLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        assert_eq!(
            parse_headers("Accept: text/plain\r\nX-A:b\n\n").unwrap(),
            vec![
                ("Accept".to_string(), "text/plain".to_string()),
                ("X-A".to_string(), "b".to_string())
            ]
        );
        assert!(parse_headers("no colon").is_err());
    }

    #[test]
    fn pages_encode() {
        let page = kv::KeyPage {
            keys: vec![b"a".to_vec(), b"bc".to_vec()],
            more: true,
        };
        assert_eq!(
            encode_page(&page),
            [2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'a', 2, 0, 0, 0, b'b', b'c']
        );
    }
}
