//! A safe wrapper of libminerva for Rust applications (a Tauri app, say).
//!
//! ```no_run
//! let model = minerva::Model::load("models/stories260K")?;
//! let mut session = model.session(&minerva::SessionOptions::default())?;
//! let prompt = model.tokenize("Once upon a time", true)?;
//! let stop = session.cancel_handle(); // Send + Sync: give it to another thread
//! session.generate(&prompt, &minerva::GenerateOptions::greedy(64), |text| {
//!     print!("{text}");
//!     true // keep going
//! })?;
//! # drop(stop);
//! # Ok::<(), minerva::Error>(())
//! ```
//!
//! A `Model` is shared (it is a reference-counted handle, `Send + Sync`);
//! each `Session` holds a KV cache, is `Send`, and is used by one thread at
//! a time; its `CancelHandle` may be used from any thread.
use minerva_sys as sys;
use std::ffi::{c_void, CStr, CString};
use std::fmt;
use std::mem::size_of;
use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::{Arc, Mutex};

/// The status of a failed call and the library's message (which file,
/// tensor or key). `status` is the C `mnv_status` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: i32,
    pub message: String,
}

impl Error {
    /// The failure the calling thread just had, copied out of the library.
    fn last(status: sys::mnv_status) -> Error {
        let n = unsafe { sys::mnv_last_error_copy(ptr::null_mut(), 0) };
        let mut buf = vec![0u8; n + 1];
        unsafe { sys::mnv_last_error_copy(buf.as_mut_ptr() as *mut c_char, buf.len()) };
        buf.truncate(n);
        Error { status, message: String::from_utf8_lossy(&buf).into_owned() }
    }
    fn new(status: sys::mnv_status, message: impl Into<String>) -> Error {
        Error { status, message: message.into() }
    }
    /// The status's name ("cancelled", "input/output error", ...).
    pub fn status_name(&self) -> String {
        unsafe { CStr::from_ptr(sys::mnv_status_str(self.status)) }.to_string_lossy().into_owned()
    }
    /// True when the call stopped because of `CancelHandle::cancel`.
    pub fn is_cancelled(&self) -> bool {
        self.status == sys::MNV_ERR_CANCELLED
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status_name(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

fn check(status: sys::mnv_status) -> Result<()> {
    if status == sys::MNV_OK { Ok(()) } else { Err(Error::last(status)) }
}

fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().to_string_lossy().as_bytes())
        .map_err(|_| Error::new(sys::MNV_ERR_INVALID_ARG, "path holds a NUL byte"))
}

fn c_str(p: *const c_char) -> String {
    if p.is_null() { String::new() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned() }
}

/// The structs' sizes as the C library sees them must equal ours.
fn check_abi() -> Result<()> {
    let (m, s, g) = unsafe {
        (sys::mnv_model_params_default().size, sys::mnv_session_params_default().size,
         sys::mnv_generate_params_default().size)
    };
    if m as usize != size_of::<sys::mnv_model_params>() || s as usize != size_of::<sys::mnv_session_params>()
        || g as usize != size_of::<sys::mnv_generate_params>()
    {
        return Err(Error::new(sys::MNV_ERR_INTERNAL, "minerva-sys does not match the linked libminerva's structs"));
    }
    Ok(())
}

/// The library's version, "MAJOR.MINOR.PATCH".
pub fn version() -> String {
    c_str(unsafe { sys::mnv_version() })
}

/// Where the installed bundled model is, when the library was found through
/// pkg-config at build time.
pub fn bundled_model_dir() -> Option<std::path::PathBuf> {
    sys::MINERVA_DATADIR.map(|d| Path::new(d).join("models/stories260K"))
}

// ---- logs --------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

type LogFn = Box<dyn Fn(LogLevel, &str) + Send + Sync>;
static LOGGER: Mutex<Option<Box<LogFn>>> = Mutex::new(None);

unsafe extern "C" fn log_trampoline(user: *mut c_void, level: sys::mnv_log_level, msg: *const c_char) {
    let f = &*(user as *const LogFn);
    let level = match level {
        sys::MNV_LOG_ERROR => LogLevel::Error,
        sys::MNV_LOG_WARN => LogLevel::Warn,
        sys::MNV_LOG_INFO => LogLevel::Info,
        _ => LogLevel::Debug,
    };
    let msg = CStr::from_ptr(msg).to_string_lossy();
    let _ = catch_unwind(AssertUnwindSafe(|| f(level, &msg)));
}

/// Route the library's diagnostics to `f` (process-wide); `None` restores
/// the default (stderr).
pub fn set_log_callback(f: Option<LogFn>) {
    let mut slot = LOGGER.lock().unwrap_or_else(|e| e.into_inner());
    match f {
        Some(f) => {
            let boxed = Box::new(f);
            let user = &*boxed as *const LogFn as *mut c_void;
            unsafe { sys::mnv_set_log_callback(Some(log_trampoline), user) };
            *slot = Some(boxed); // the old one is dropped after the library stopped using it
        }
        None => {
            unsafe { sys::mnv_set_log_callback(None, ptr::null_mut()) };
            *slot = None;
        }
    }
}

// ---- models ------------------------------------------------------------------------------

struct ModelPtr(NonNull<sys::mnv_model>);
// An mnv_model is immutable after loading and may be shared across threads.
unsafe impl Send for ModelPtr {}
unsafe impl Sync for ModelPtr {}
impl Drop for ModelPtr {
    fn drop(&mut self) {
        unsafe { sys::mnv_model_free(self.0.as_ptr()) }
    }
}

/// A loaded model; cheap to clone (sessions keep it alive).
#[derive(Clone)]
pub struct Model {
    inner: Arc<ModelPtr>,
}

/// What a model is (see `mnv_model_info` in minerva.h).
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub arch: String,
    pub chat_format: String,
    pub n_vocab: i32,
    pub n_ctx_train: i32,
    pub n_layer: i32,
    pub n_embd: i32,
    pub bos_id: i32,
    pub eos_ids: Vec<i32>,
    pub n_params: u64,
    pub weight_bytes: u64,
    pub kv_bytes_per_token: u64,
}

/// Memory a model and one session will need (`mnv_model_estimate_memory`).
pub type MemoryEstimate = sys::mnv_memory_estimate;

unsafe extern "C" fn progress_trampoline(user: *mut c_void, done: u64, total: u64) {
    let f = &mut *(user as *mut &mut dyn FnMut(u64, u64));
    let _ = catch_unwind(AssertUnwindSafe(|| f(done, total)));
}

impl Model {
    /// Load a model directory (config.json, safetensors, tokenizer.json).
    pub fn load(dir: impl AsRef<Path>) -> Result<Model> {
        Self::load_with_progress(dir, 0, None)
    }

    /// Load with `n_threads` compute threads (0: all cores) and, if given, a
    /// progress callback receiving (bytes read, total weight bytes).
    pub fn load_with_progress(
        dir: impl AsRef<Path>,
        n_threads: i32,
        mut progress: Option<&mut dyn FnMut(u64, u64)>,
    ) -> Result<Model> {
        check_abi()?;
        let path = c_path(dir.as_ref())?;
        let mut p = unsafe { sys::mnv_model_params_default() };
        p.n_threads = n_threads;
        let mut cb: Option<&mut dyn FnMut(u64, u64)> = progress.take();
        if let Some(f) = cb.as_mut() {
            p.progress = Some(progress_trampoline);
            p.progress_user_data = f as *mut &mut dyn FnMut(u64, u64) as *mut c_void;
        }
        let mut out = ptr::null_mut();
        check(unsafe { sys::mnv_model_load(path.as_ptr(), &p, &mut out) })?;
        let ptr = NonNull::new(out).ok_or_else(|| Error::new(sys::MNV_ERR_INTERNAL, "NULL model"))?;
        Ok(Model { inner: Arc::new(ModelPtr(ptr)) })
    }

    /// Estimate memory before loading, for one session of `n_ctx` tokens
    /// (0: the session default).
    pub fn estimate_memory(dir: impl AsRef<Path>, n_ctx: i32) -> Result<MemoryEstimate> {
        let path = c_path(dir.as_ref())?;
        let mut sp = unsafe { sys::mnv_session_params_default() };
        sp.n_ctx = n_ctx;
        let mut est = MemoryEstimate::default();
        check(unsafe { sys::mnv_model_estimate_memory(path.as_ptr(), &sp, &mut est) })?;
        Ok(est)
    }

    fn raw(&self) -> *mut sys::mnv_model {
        self.inner.0.as_ptr()
    }

    pub fn info(&self) -> Result<ModelInfo> {
        let mut i = std::mem::MaybeUninit::<sys::mnv_model_info>::zeroed();
        check(unsafe { sys::mnv_model_get_info(self.raw(), i.as_mut_ptr()) })?;
        let i = unsafe { i.assume_init() };
        Ok(ModelInfo {
            arch: c_str(i.arch),
            chat_format: c_str(i.chat_format),
            n_vocab: i.n_vocab,
            n_ctx_train: i.n_ctx_train,
            n_layer: i.n_layer,
            n_embd: i.n_embd,
            bos_id: i.bos_id,
            eos_ids: i.eos_ids[..i.n_eos.clamp(0, 8) as usize].to_vec(),
            n_params: i.n_params,
            weight_bytes: i.weight_bytes,
            kv_bytes_per_token: i.kv_bytes_per_token,
        })
    }

    fn tokenizer(&self) -> Result<*const sys::mnv_tokenizer> {
        let t = unsafe { sys::mnv_model_tokenizer(self.raw()) };
        if t.is_null() { Err(Error::new(sys::MNV_ERR_UNSUPPORTED, "the model has no tokenizer.json")) } else { Ok(t) }
    }

    /// Token ids of `text`; with `bos`, BOS first when the tokenizer asks for it.
    pub fn tokenize(&self, text: &str, bos: bool) -> Result<Vec<i32>> {
        let tok = self.tokenizer()?;
        let add_bos = (bos && unsafe { sys::mnv_tokenizer_add_bos(tok) } != 0) as c_int;
        let mut n = 0usize;
        let st = unsafe {
            sys::mnv_tokenize(tok, text.as_ptr() as *const c_char, text.len(), add_bos, ptr::null_mut(), 0, &mut n)
        };
        if st != sys::MNV_OK && st != sys::MNV_ERR_BUFFER_TOO_SMALL {
            return Err(Error::last(st));
        }
        let mut ids = vec![0i32; n];
        check(unsafe {
            sys::mnv_tokenize(tok, text.as_ptr() as *const c_char, text.len(), add_bos, ids.as_mut_ptr(), n, &mut n)
        })?;
        ids.truncate(n);
        Ok(ids)
    }

    /// A new session (KV cache) on this model.
    pub fn session(&self, opts: &SessionOptions) -> Result<Session> {
        let mut p = unsafe { sys::mnv_session_params_default() };
        p.n_ctx = opts.n_ctx;
        p.n_batch = opts.n_batch;
        p.n_threads = opts.n_threads;
        let mut out = ptr::null_mut();
        check(unsafe { sys::mnv_session_create(self.raw(), &p, &mut out) })?;
        Ok(Session {
            shared: Arc::new(SessionShared { ptr: Mutex::new(SessionPtr(out)) }),
            _model: self.clone(),
        })
    }
}

// ---- sessions and generation ---------------------------------------------------------

#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Context length in tokens; 0: min(the model's, 4096).
    pub n_ctx: i32,
    /// Tokens per forward pass; 0: 512. Smaller bounds how long a
    /// cancellation waits during a long prompt.
    pub n_batch: i32,
    /// 0: the model's setting.
    pub n_threads: i32,
}

struct SessionPtr(*mut sys::mnv_session);
// The pointer is only freed under the lock (Drop of Session), and
// mnv_session_cancel may be called from any thread.
unsafe impl Send for SessionPtr {}

struct SessionShared {
    ptr: Mutex<SessionPtr>,
}

/// A KV cache and compute state. Used by one thread at a time (`&mut self`);
/// cancel it from anywhere through a `CancelHandle`.
pub struct Session {
    shared: Arc<SessionShared>,
    _model: Model,
}

/// Cancels the session's running (or next) generation from any thread.
/// Stays valid after the session is dropped (it then does nothing).
#[derive(Clone)]
pub struct CancelHandle {
    shared: Arc<SessionShared>,
}

impl CancelHandle {
    /// Ask the generation to stop: it returns an error with
    /// `is_cancelled()` at its next check (before the next token, or
    /// between two operations of a forward pass, inside a long prompt too).
    /// Returns false when the session is gone.
    pub fn cancel(&self) -> bool {
        let g = self.shared.ptr.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.is_null() {
            return false;
        }
        unsafe { sys::mnv_session_cancel(g.0) };
        true
    }
}

/// Sampling and stopping (see `mnv_generate_params`).
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: i32,
    /// <= 0: greedy.
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub seed: u64,
    /// Generation stops before any of these strings.
    pub stop: Vec<String>,
}

impl GenerateOptions {
    /// Deterministic: always the most likely token.
    pub fn greedy(max_tokens: i32) -> GenerateOptions {
        GenerateOptions { max_tokens, temperature: 0.0, ..GenerateOptions::default() }
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        let s = unsafe { sys::mnv_sampler_params_default() };
        GenerateOptions {
            max_tokens: 256,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            min_p: s.min_p,
            seed: s.seed,
            stop: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    MaxTokens,
    Eos,
    StopString,
    Callback,
    ContextFull,
    Other,
}

#[derive(Debug, Clone, Copy)]
pub struct GenerateResult {
    pub stop_reason: StopReason,
    pub n_prompt: i32,
    pub n_generated: i32,
    pub prompt_seconds: f64,
    pub gen_seconds: f64,
}

struct StreamState<'a> {
    f: &'a mut dyn FnMut(&str) -> bool,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

unsafe extern "C" fn token_trampoline(user: *mut c_void, _tok: i32, text: *const c_char, len: usize) -> c_int {
    let st = &mut *(user as *mut StreamState);
    if st.panic.is_some() {
        return 1;
    }
    let bytes = if len == 0 { &[][..] } else { std::slice::from_raw_parts(text as *const u8, len) };
    let text = String::from_utf8_lossy(bytes);
    match catch_unwind(AssertUnwindSafe(|| (st.f)(&text))) {
        Ok(go_on) => (!go_on) as c_int,
        Err(p) => {
            st.panic = Some(p); // re-raised once the C call has returned
            1
        }
    }
}

impl Session {
    fn raw(&self) -> *mut sys::mnv_session {
        self.shared.ptr.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// A handle that cancels this session's generation from any thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle { shared: self.shared.clone() }
    }

    /// Tokens held in the context.
    pub fn n_past(&self) -> i32 {
        unsafe { sys::mnv_session_n_past(self.raw()) }
    }

    /// Forget the context (and a pending cancellation).
    pub fn reset(&mut self) {
        unsafe { sys::mnv_session_reset(self.raw()) }
    }

    /// Evaluate `prompt`, then generate, calling `on_text` with each piece
    /// of text as it comes (whole UTF-8 characters). `on_text` returns
    /// false to stop. A cancellation gives `Err(e)` with `e.is_cancelled()`.
    pub fn generate(
        &mut self,
        prompt: &[i32],
        opts: &GenerateOptions,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<GenerateResult> {
        let stops: Vec<CString> = opts
            .stop
            .iter()
            .map(|s| CString::new(s.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::new(sys::MNV_ERR_INVALID_ARG, "a stop string holds a NUL byte"))?;
        let stop_ptrs: Vec<*const c_char> = stops.iter().map(|s| s.as_ptr()).collect();
        let mut state = StreamState { f: &mut on_text, panic: None };
        let mut p = unsafe { sys::mnv_generate_params_default() };
        p.max_tokens = opts.max_tokens;
        p.sampler.temperature = opts.temperature;
        p.sampler.top_k = opts.top_k;
        p.sampler.top_p = opts.top_p;
        p.sampler.min_p = opts.min_p;
        p.sampler.seed = opts.seed;
        p.stop_strings = if stop_ptrs.is_empty() { ptr::null() } else { stop_ptrs.as_ptr() };
        p.n_stop = stop_ptrs.len();
        p.on_token = Some(token_trampoline);
        p.user_data = &mut state as *mut StreamState as *mut c_void;
        let mut r = sys::mnv_generate_result::default();
        let st = unsafe { sys::mnv_generate(self.raw(), prompt.as_ptr(), prompt.len(), &p, &mut r) };
        if let Some(panic) = state.panic.take() {
            resume_unwind(panic);
        }
        check(st)?;
        Ok(GenerateResult {
            stop_reason: match r.stop_reason {
                sys::MNV_STOP_MAX_TOKENS => StopReason::MaxTokens,
                sys::MNV_STOP_EOS => StopReason::Eos,
                sys::MNV_STOP_STRING => StopReason::StopString,
                sys::MNV_STOP_CALLBACK => StopReason::Callback,
                sys::MNV_STOP_CONTEXT_FULL => StopReason::ContextFull,
                _ => StopReason::Other,
            },
            n_prompt: r.n_prompt,
            n_generated: r.n_generated,
            prompt_seconds: r.prompt_seconds,
            gen_seconds: r.gen_seconds,
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut g = self.shared.ptr.lock().unwrap_or_else(|e| e.into_inner());
        unsafe { sys::mnv_session_free(g.0) };
        g.0 = ptr::null_mut(); // handles that outlive the session now do nothing
    }
}
