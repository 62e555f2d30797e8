// HTTP/1.x request heads as pure functions over bytes, for the endpoint on the
// event loop (metrics/http_endpoint.h): parse_request() looks at what a
// connection has sent so far and says whether the head (request line and
// header fields up to CRLF CRLF) is complete, still incomplete, too large or
// malformed; format_response() writes a whole answer. No I/O, no allocation in
// the parser, no recursion: one pass over at most max_head bytes.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace metrics::http {

inline constexpr size_t kMaxHeadBytes = 8192;   // request line + header fields + CRLF CRLF

enum class Parse {
  Incomplete,   // no CRLF CRLF yet, and nothing wrong so far: read more
  Complete,     // head holds the request
  TooLarge,     // max_head bytes without the end of the head (431)
  Malformed,    // a complete line that is not HTTP/1.x syntax (400)
  BadVersion,   // a well-formed request line for HTTP/2+ or HTTP/0.x (505)
};

struct RequestHead {
  std::string_view method;   // a token, e.g. "GET" (case-sensitive)
  std::string_view target;   // origin-form as sent: "/metrics?x=1"
  std::string_view path;     // target up to '?': "/metrics"
  int minor_version = 0;     // HTTP/1.<minor_version>
  size_t size = 0;           // bytes of the head, CRLF CRLF included
};

struct ParseResult {
  Parse status = Parse::Incomplete;
  RequestHead head;   // views into the parsed bytes; set when status is Complete
};

// Parses the head at the start of `bytes` (a request's first bytes, possibly
// followed by a body or pipelined requests, which are ignored). Lines end with
// CRLF; a bare LF (at once), a bare CR, obsolete line folding, whitespace
// before a field's colon and a target not starting with '/' are malformed. Decisions are made on complete lines only, so a result
// other than Incomplete for some bytes is the result for every extension of
// them: a reader may parse again after each read, and stop at the first answer.
ParseResult parse_request(std::string_view bytes, size_t max_head = kMaxHeadBytes);

// "HTTP/1.1 <status> <reason>" with Content-Type, Content-Length and
// Connection: close, then `extra_headers` (each ending in CRLF), then body.
std::string format_response(int status, std::string_view content_type, std::string_view body,
                            std::string_view extra_headers = {});

// The reason phrase for the statuses the endpoint sends ("Unknown" otherwise).
std::string_view reason_phrase(int status);

}  // namespace metrics::http
