#include "metrics/http_request.h"

#include <algorithm>
#include <utility>

namespace metrics::http {

namespace {

// RFC 9110 token characters (methods, field names).
bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(char(c)) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is_tchar(static_cast<unsigned char>(c)); });
}

// A request target in origin-form: '/' then visible ASCII.
bool is_origin_form(std::string_view s) {
  return !s.empty() && s.front() == '/' &&
         std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// Field value characters: visible ASCII, SP, HTAB, obs-text.
bool is_field_value(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u == '\t' || (u >= 0x20 && u != 0x7f);
  });
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// "METHOD SP target SP HTTP/d.d" into head; Malformed or BadVersion otherwise.
Parse parse_request_line(std::string_view line, RequestHead& head) {
  size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return Parse::Malformed;
  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return Parse::Malformed;
  std::string_view method = line.substr(0, sp1), target = line.substr(sp1 + 1, sp2 - sp1 - 1),
                   version = line.substr(sp2 + 1);
  if (!is_token(method) || !is_origin_form(target)) return Parse::Malformed;
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || !is_digit(version[5]) || version[6] != '.' ||
      !is_digit(version[7]))
    return Parse::Malformed;
  if (version[5] != '1') return Parse::BadVersion;
  head.method = method;
  head.target = target;
  head.path = target.substr(0, target.find('?'));
  head.minor_version = version[7] - '0';
  return Parse::Complete;
}

// "name: value" with name a token and no whitespace before the colon.
bool is_header_line(std::string_view line) {
  size_t colon = line.find(':');
  return colon != std::string_view::npos && is_token(line.substr(0, colon)) && is_field_value(line.substr(colon + 1));
}

}  // namespace

ParseResult parse_request(std::string_view bytes, size_t max_head) {
  ParseResult r;
  std::string_view window = bytes.substr(0, std::min(bytes.size(), max_head));
  for (size_t pos = 0;;) {
    size_t lf = window.find('\n', pos);
    if (lf == std::string_view::npos) {
      r.status = bytes.size() >= max_head ? Parse::TooLarge : Parse::Incomplete;
      return r;
    }
    if (lf == pos || window[lf - 1] != '\r') {   // a bare LF
      r.status = Parse::Malformed;
      return r;
    }
    std::string_view line = window.substr(pos, lf - 1 - pos);
    if (pos == 0) {
      r.status = parse_request_line(line, r.head);
      if (r.status != Parse::Complete) return r;
    } else if (line.empty()) {
      r.head.size = lf + 1;
      return r;   // Complete
    } else if (!is_header_line(line)) {
      r.status = Parse::Malformed;
      return r;
    }
    pos = lf + 1;
  }
}

std::string_view reason_phrase(int status) {
  static constexpr std::pair<int, std::string_view> kReasons[] = {
      {200, "OK"},
      {400, "Bad Request"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {408, "Request Timeout"},
      {431, "Request Header Fields Too Large"},
      {503, "Service Unavailable"},
      {505, "HTTP Version Not Supported"},
  };
  for (const auto& [code, reason] : kReasons)
    if (code == status) return reason;
  return "Unknown";
}

std::string format_response(int status, std::string_view content_type, std::string_view body,
                            std::string_view extra_headers) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " ";
  out += reason_phrase(status);
  out += "\r\nContent-Type: ";
  out += content_type;
  out += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n";
  out += extra_headers;
  out += "\r\n";
  out += body;
  return out;
}

}  // namespace metrics::http
