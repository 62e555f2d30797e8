// The one place protocol bytes are framed and validated (PostgreSQL v3).
//
// Frontend (client -> pgsidecar): frame_frontend() looks at the message at the
// head of the input and says what may be done with it:
//  - Ready: forward it. Either all of it is here and its body was validated
//    (`inspect`: handlers may read any field), or it is a streaming type (Bind,
//    FunctionCall, CopyData) whose leading fields have arrived, or it is larger
//    than the inspect limit and passes through unread (`inspect` false).
//  - Partial: wait for more bytes. The caller buffers at most `inspect_limit`
//    plus one read, so memory per client stays bounded.
//  - Invalid: a protocol violation; `error` says what (08P01 for that client).
// Each message type has one row in a table: whether it exists, its fixed length,
// whether it streams, and the check of its body.
//
// Backend (server -> pgsidecar): frame_backend() bounds lengths and validates the
// bodies pgsidecar reads (ReadyForQuery, ParameterStatus, BackendKeyData, errors,
// authentication requests); everything else is forwarded without being read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace pg {

enum class FrameStatus : uint8_t { Ready, Partial, Invalid };

struct Frame {
  char type = 0;
  uint32_t len = 0;     // the length field: body + 4
  size_t total = 0;     // the whole message: len + 1
  bool whole = false;   // all `total` bytes are in the buffer
  bool inspect = false; // whole and validated: every field may be read
};

// Largest message pgsidecar itself reads whole from a server (ParameterStatus,
// ErrorResponse, authentication); larger ones are forwarded unread or refused.
constexpr size_t kMaxBackendInspect = 64 * 1024;
// Smallest inspect limit (config max_inspect_bytes may not go below).
constexpr size_t kMinInspectLimit = 64 * 1024;

FrameStatus frame_frontend(const uint8_t* p, size_t avail, size_t inspect_limit, Frame& f, std::string& error);
FrameStatus frame_backend(const uint8_t* p, size_t avail, Frame& f, std::string& error);

// The body checks on their own (body = after the 5-byte header), for tests and fuzzing.
bool valid_frontend_body(char type, const uint8_t* body, size_t len);
bool valid_backend_body(char type, const uint8_t* body, size_t len);

}  // namespace pg
