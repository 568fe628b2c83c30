//! Raw bindings of libminerva's C API, written by hand from
//! `include/minerva.h` (the model, session, generation, error and log parts;
//! the chat, conversion and synthesis parts are not declared here). Every
//! struct mirrors its C layout (`#[repr(C)]`); the parameter structs begin
//! with `size`, which the `*_default()` getters fill with the C `sizeof`, so
//! a layout mismatch is caught at run time by comparing it with
//! `size_of::<T>()` (the safe wrapper does).
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_void};

/// `mnv_status`: 0 is success; see `MNV_STATUS_LIST` in minerva.h.
pub type mnv_status = c_int;
pub const MNV_OK: mnv_status = 0;
pub const MNV_ERR_INVALID_ARG: mnv_status = 1;
pub const MNV_ERR_IO: mnv_status = 2;
pub const MNV_ERR_FORMAT: mnv_status = 3;
pub const MNV_ERR_UNSUPPORTED: mnv_status = 4;
pub const MNV_ERR_NOMEM: mnv_status = 5;
pub const MNV_ERR_RANGE: mnv_status = 6;
pub const MNV_ERR_BACKEND: mnv_status = 7;
pub const MNV_ERR_CANCELLED: mnv_status = 8;
pub const MNV_ERR_INTERNAL: mnv_status = 9;
pub const MNV_ERR_BUFFER_TOO_SMALL: mnv_status = 10;

/// `mnv_dtype` (the values used here).
pub type mnv_dtype = c_int;
pub const MNV_DTYPE_F32: mnv_dtype = 0;
pub const MNV_DTYPE_F16: mnv_dtype = 1;
pub const MNV_DTYPE_BF16: mnv_dtype = 2;

pub type mnv_log_level = c_int;
pub const MNV_LOG_ERROR: mnv_log_level = 0;
pub const MNV_LOG_WARN: mnv_log_level = 1;
pub const MNV_LOG_INFO: mnv_log_level = 2;
pub const MNV_LOG_DEBUG: mnv_log_level = 3;

pub type mnv_stop_reason = c_int;
pub const MNV_STOP_NONE: mnv_stop_reason = 0;
pub const MNV_STOP_MAX_TOKENS: mnv_stop_reason = 1;
pub const MNV_STOP_EOS: mnv_stop_reason = 2;
pub const MNV_STOP_STRING: mnv_stop_reason = 3;
pub const MNV_STOP_CALLBACK: mnv_stop_reason = 4;
pub const MNV_STOP_CONTEXT_FULL: mnv_stop_reason = 5;

#[repr(C)]
pub struct mnv_model {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct mnv_session {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct mnv_tokenizer {
    _opaque: [u8; 0],
}

pub type mnv_progress_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, done: u64, total: u64)>;
pub type mnv_log_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, level: mnv_log_level, msg: *const c_char)>;
pub type mnv_token_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, token: i32, text: *const c_char, len: usize) -> c_int>;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct mnv_logit_bias {
    pub token: i32,
    pub bias: f32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mnv_token_logprobs {
    pub token: i32,
    pub logprob: f32,
    pub n_top: i32,
    pub top_ids: *const i32,
    pub top_logprobs: *const f32,
}

pub type mnv_logprobs_callback = Option<unsafe extern "C" fn(user_data: *mut c_void, lp: *const mnv_token_logprobs)>;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mnv_model_params {
    pub size: u32,
    pub n_threads: c_int,
    pub use_mmap: c_int,
    pub load_tokenizer: c_int,
    pub progress: mnv_progress_callback,
    pub progress_user_data: *mut c_void,
    pub reserved: [u32; 8],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mnv_model_info {
    pub arch: *const c_char,
    pub n_vocab: i32,
    pub n_ctx_train: i32,
    pub n_layer: i32,
    pub n_embd: i32,
    pub n_ff: i32,
    pub n_head: i32,
    pub n_head_kv: i32,
    pub head_dim: i32,
    pub tied_embeddings: i32,
    pub bos_id: i32,
    pub n_eos: i32,
    pub eos_ids: [i32; 8],
    pub n_params: u64,
    pub weight_bytes: u64,
    pub kv_bytes_per_token: u64,
    pub active_bytes_per_token: u64,
    pub chat_format: *const c_char,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mnv_session_params {
    pub size: u32,
    pub n_ctx: i32,
    pub n_batch: i32,
    pub n_threads: i32,
    pub kv_dtype: mnv_dtype,
    pub exact_quant: i32,
    pub deterministic: i32,
    pub kv_type_k: i32,
    pub kv_type_v: i32,
    pub device: *const c_char,
    pub kv_rotate: i32,
    pub reserved: [u32; 5],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct mnv_memory_estimate {
    pub weight_bytes: u64,
    pub kv_bytes: u64,
    pub compute_bytes: u64,
    pub total_bytes: u64,
    pub n_ctx: i32,
    pub n_batch: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct mnv_session_stats {
    pub n_nodes: i32,
    pub build_seconds: f64,
    pub plan_seconds: f64,
    pub compute_seconds: f64,
    pub arena_bytes: u64,
    pub kv_bytes: u64,
    pub n_ctx: i32,
    pub n_threads: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mnv_sampler_params {
    pub size: u32,
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub seed: u64,
    pub reserved: [u32; 8],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct mnv_generate_params {
    pub size: u32,
    pub max_tokens: i32,
    pub sampler: mnv_sampler_params,
    pub stop_strings: *const *const c_char,
    pub n_stop: usize,
    pub eos_ids: *const i32,
    pub n_eos: usize,
    pub ignore_eos: c_int,
    pub on_token: mnv_token_callback,
    pub user_data: *mut c_void,
    pub logit_bias: *const mnv_logit_bias,
    pub n_logit_bias: usize,
    pub on_logprobs: mnv_logprobs_callback,
    pub n_top_logprobs: i32,
    pub scripted_ids: *const i32,
    pub n_scripted: usize,
    pub reserved: [u32; 8],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct mnv_generate_result {
    pub stop_reason: mnv_stop_reason,
    pub n_prompt: i32,
    pub n_generated: i32,
    pub prompt_seconds: f64,
    pub gen_seconds: f64,
}

extern "C" {
    pub fn mnv_status_str(s: mnv_status) -> *const c_char;
    pub fn mnv_last_error() -> *const c_char;
    pub fn mnv_last_error_copy(buf: *mut c_char, cap: usize) -> usize;
    pub fn mnv_set_log_callback(cb: mnv_log_callback, user_data: *mut c_void);
    pub fn mnv_version() -> *const c_char;

    pub fn mnv_tokenizer_n_vocab(tok: *const mnv_tokenizer) -> i32;
    pub fn mnv_tokenizer_bos(tok: *const mnv_tokenizer) -> i32;
    pub fn mnv_tokenizer_eos(tok: *const mnv_tokenizer) -> i32;
    pub fn mnv_tokenizer_add_bos(tok: *const mnv_tokenizer) -> c_int;
    pub fn mnv_tokenize(
        tok: *const mnv_tokenizer,
        text: *const c_char,
        len: usize,
        add_bos: c_int,
        ids: *mut i32,
        cap: usize,
        n_out: *mut usize,
    ) -> mnv_status;
    pub fn mnv_detokenize(
        tok: *const mnv_tokenizer,
        ids: *const i32,
        n: usize,
        skip_special: c_int,
        text: *mut c_char,
        cap: usize,
        len_out: *mut usize,
    ) -> mnv_status;

    pub fn mnv_model_params_default() -> mnv_model_params;
    pub fn mnv_model_load(dir: *const c_char, params: *const mnv_model_params, out: *mut *mut mnv_model) -> mnv_status;
    pub fn mnv_model_free(model: *mut mnv_model);
    pub fn mnv_model_get_info(model: *const mnv_model, info: *mut mnv_model_info) -> mnv_status;
    pub fn mnv_config_estimate(config_path: *const c_char, info: *mut mnv_model_info) -> mnv_status;
    pub fn mnv_model_tokenizer(model: *const mnv_model) -> *const mnv_tokenizer;

    pub fn mnv_session_params_default() -> mnv_session_params;
    pub fn mnv_model_estimate_memory(
        dir: *const c_char,
        session_params: *const mnv_session_params,
        out: *mut mnv_memory_estimate,
    ) -> mnv_status;
    pub fn mnv_session_create(
        model: *mut mnv_model,
        params: *const mnv_session_params,
        out: *mut *mut mnv_session,
    ) -> mnv_status;
    pub fn mnv_session_free(s: *mut mnv_session);
    pub fn mnv_session_reset(s: *mut mnv_session);
    pub fn mnv_session_cancel(s: *mut mnv_session);
    pub fn mnv_session_truncate(s: *mut mnv_session, n: i32) -> mnv_status;
    pub fn mnv_session_load_weights(
        s: *mut mnv_session,
        progress: mnv_progress_callback,
        user_data: *mut c_void,
    ) -> mnv_status;
    pub fn mnv_session_n_past(s: *const mnv_session) -> i32;
    pub fn mnv_session_eval(s: *mut mnv_session, ids: *const i32, n: usize, logits: *mut f32) -> mnv_status;
    pub fn mnv_session_get_stats(s: *const mnv_session, out: *mut mnv_session_stats) -> mnv_status;

    pub fn mnv_sampler_params_default() -> mnv_sampler_params;
    pub fn mnv_generate_params_default() -> mnv_generate_params;
    pub fn mnv_generate(
        s: *mut mnv_session,
        prompt: *const i32,
        n_prompt: usize,
        params: *const mnv_generate_params,
        result: *mut mnv_generate_result,
    ) -> mnv_status;
}

/// Where `pkg-config` said the installed data lives (`<prefix>/share/minerva`),
/// when the library was found that way: the bundled model is
/// `<MINERVA_DATADIR>/models/stories260K`.
pub const MINERVA_DATADIR: Option<&str> = option_env!("MINERVA_DATADIR");
