//! spec/chaterror.md §14.3, rows 28–52: transport failures and HTTP/2 resets.

use chaterror::Provider::{Anthropic, Google, OpenAi};

use crate::rows;
use crate::support::*;

const TIMED_OUT_ROW: &str = "The AI provider is temporarily unavailable.";

rows! {
    row28_timeout: text("timeout") => Timeout, true, 0, None, "timeout", UNAVAILABLE;
    row28_eof: text("eof") => Timeout, true, 0, None, "eof", UNAVAILABLE;
    row28_broken_pipe: text("broken pipe") => Timeout, true, 0, None, "broken pipe", UNAVAILABLE;
    row28_connection_reset: text("connection reset") => Timeout, true, 0, None, "connection reset", UNAVAILABLE;
    row28_connection_refused: text("connection refused") => Timeout, true, 0, None, "connection refused", UNAVAILABLE;
    row29_force_closed: text("http2: client connection force closed via ClientConn.Close") => Timeout, true, 0, None, "http2: client connection force closed via ClientConn.Close", UNAVAILABLE;
    row30_graceful_goaway: text("http2: Transport received Server's graceful shutdown GOAWAY") => Timeout, true, 0, None, "http2: Transport received Server's graceful shutdown GOAWAY", UNAVAILABLE;
    row31_goaway_closed: text("http2: server sent GOAWAY and closed the connection") => Timeout, true, 0, None, "http2: server sent GOAWAY and closed the connection", UNAVAILABLE;
    row32_stream_closed: text("http2: stream closed") => Timeout, true, 0, None, "http2: stream closed", UNAVAILABLE;
    row33_internal_error_text: text("stream error: stream ID 455; INTERNAL_ERROR; received from peer") => Timeout, true, 0, None, "stream error: stream ID 455; INTERNAL_ERROR; received from peer", UNAVAILABLE;
    row34_url_means_no_detail: text("Post \"https://example.com/v1/messages\": use of closed network connection") => Timeout, true, 0, None, "", UNAVAILABLE;
    row35_client_conn_closed: text("http2: client conn is closed") => Timeout, true, 0, None, "http2: client conn is closed", UNAVAILABLE;
    row35_client_conn_not_usable: text("http2: client conn not usable") => Timeout, true, 0, None, "http2: client conn not usable", UNAVAILABLE;
    row35_client_conn_not_established: text("http2: client conn could not be established") => Timeout, true, 0, None, "http2: client conn could not be established", UNAVAILABLE;
    row35_client_connection_lost: text("http2: client connection lost") => Timeout, true, 0, None, "http2: client connection lost", UNAVAILABLE;
    row36_anthropic_url: text("stream response: Post \"https://api.anthropic.com/v1/messages\": http2: client connection force closed via ClientConn.Close") => Timeout, true, 0, Some(Anthropic), "", "Anthropic is temporarily unavailable.";
    row37_openai_url: text("stream response: Post \"https://api.openai.com/v1/responses\": http2: client connection force closed via ClientConn.Close") => Timeout, true, 0, Some(OpenAi), "", "OpenAI is temporarily unavailable.";
    row38_google_url: text("stream response: Post \"https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent\": http2: client connection force closed via ClientConn.Close") => Timeout, true, 0, Some(Google), "", "Google is temporarily unavailable.";
    row39_anthropic_reset_text: text("stream response: Post \"https://api.anthropic.com/v1/messages\": stream error: stream ID 1; INTERNAL_ERROR; received from peer") => Timeout, true, 0, Some(Anthropic), "", "Anthropic is temporarily unavailable.";

    row40_peer_internal_error: h2_peer(455, "INTERNAL_ERROR") => Timeout, true, 0, None, "stream error: stream ID 455; INTERNAL_ERROR; received from peer", TIMED_OUT_ROW;
    row40_peer_refused_stream: h2_peer(455, "REFUSED_STREAM") => Timeout, true, 0, None, "stream error: stream ID 455; REFUSED_STREAM; received from peer", TIMED_OUT_ROW;
    row40_peer_cancel: h2_peer(455, "CANCEL") => Timeout, true, 0, None, "stream error: stream ID 455; CANCEL; received from peer", TIMED_OUT_ROW;
    row40_peer_enhance_your_calm: h2_peer(455, "ENHANCE_YOUR_CALM") => Timeout, true, 0, None, "stream error: stream ID 455; ENHANCE_YOUR_CALM; received from peer", TIMED_OUT_ROW;
    row40_peer_no_error: h2_peer(455, "NO_ERROR") => Timeout, true, 0, None, "stream error: stream ID 455; NO_ERROR; received from peer", TIMED_OUT_ROW;
    row40_peer_reset_through_a_wrapper: wrap("stream response: ", h2_peer(455, "INTERNAL_ERROR")) => Timeout, true, 0, None, "stream response: stream error: stream ID 455; INTERNAL_ERROR; received from peer", TIMED_OUT_ROW;
    row41_local_cancel: h2_local(455, "CANCEL", None) => Generic, false, 0, None, "stream error: stream ID 455; CANCEL", FAILED_UNEXPECTEDLY;
    row42_local_with_cause: h2_local(455, "INTERNAL_ERROR", Some("local transport reset")) => Generic, false, 0, None, "stream error: stream ID 455; INTERNAL_ERROR; local transport reset", FAILED_UNEXPECTEDLY;
    row43_peer_protocol_error: h2_peer(455, "PROTOCOL_ERROR") => Generic, false, 0, None, "stream error: stream ID 455; PROTOCOL_ERROR; received from peer", FAILED_UNEXPECTEDLY;
    row43_peer_flow_control_error: h2_peer(455, "FLOW_CONTROL_ERROR") => Generic, false, 0, None, "stream error: stream ID 455; FLOW_CONTROL_ERROR; received from peer", FAILED_UNEXPECTEDLY;
    row43_peer_frame_size_error: h2_peer(455, "FRAME_SIZE_ERROR") => Generic, false, 0, None, "stream error: stream ID 455; FRAME_SIZE_ERROR; received from peer", FAILED_UNEXPECTEDLY;
    row43_peer_compression_error: h2_peer(455, "COMPRESSION_ERROR") => Generic, false, 0, None, "stream error: stream ID 455; COMPRESSION_ERROR; received from peer", FAILED_UNEXPECTEDLY;
    row44_stream_id_401_is_not_a_status: h2_peer(401, "INTERNAL_ERROR") => Timeout, true, 0, None, "stream error: stream ID 401; INTERNAL_ERROR; received from peer", UNAVAILABLE;
    row45_stream_id_503_is_not_a_status: h2_peer(503, "PROTOCOL_ERROR") => Generic, false, 0, None, "stream error: stream ID 503; PROTOCOL_ERROR; received from peer", FAILED_UNEXPECTEDLY;
    row46_stream_id_401_text: text("stream error: stream ID 401; INTERNAL_ERROR; received from peer") => Timeout, true, 0, None, "stream error: stream ID 401; INTERNAL_ERROR; received from peer", UNAVAILABLE;
    row47_stream_id_503_text: text("stream error: stream ID 503; PROTOCOL_ERROR; received from peer") => Generic, false, 0, None, "stream error: stream ID 503; PROTOCOL_ERROR; received from peer", FAILED_UNEXPECTEDLY;
    row48_status_401_beats_reset: wrap("provider returned status 401: ", h2_peer(455, "INTERNAL_ERROR")) => Auth, false, 401, None, "", A;
    row49_http2_server_error_429: text("http2: server error 429 Too Many Requests") => RateLimit, true, 429, None, "http2: server error 429 Too Many Requests", RATE_LIMITING;
    row50_http2_401: text("http2: 401 unauthorized") => Auth, false, 401, None, "", A;
    row51_client_conn_closed_429: text("http2: client conn is closed: status 429 Too Many Requests") => RateLimit, true, 429, None, "http2: client conn is closed: status 429 Too Many Requests", RATE_LIMITING;
    row52_goaway_401: text("http2: server sent GOAWAY: status 401 unauthorized") => Auth, false, 401, None, "", A;
}
