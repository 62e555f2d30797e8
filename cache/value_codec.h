// Stored responses as bytes: what a cached value may contain, and how it travels
// to and from Redis. Values read back from Redis are untrusted: anything that
// does not decode to exactly the key asked for and a well-formed response is
// rejected, never replayed.
#pragma once
#include <string>
#include <string_view>

#include "conf/config.h"

namespace cache {

// True if bytes are exactly [RowDescription] DataRow* CommandComplete, each a
// whole message (type byte, length >= 4). Sets has_row_description.
bool valid_response(std::string_view bytes, bool& has_row_description);

// Redis value: magic, flags, the full key (checked on read: the Redis key is only
// its hash), the response's length and CRC-32, then the response, zstd-compressed
// unless compression is None or it would not shrink.
std::string encode_value(std::string_view key, std::string_view response, conf::Compression compression);
// The response for key, or false if the value is corrupt, truncated, for another
// key, not a well-formed response, or declares more than max_response bytes
// (checked before anything is allocated: a few bytes must not cost a gigabyte).
bool decode_value(std::string_view stored, std::string_view key, std::string& response, bool& has_row_description,
                  size_t max_response = 16u << 20);

// Hex digest (32 digits) naming a key in Redis; collisions only cost a miss,
// since the stored value carries the full key.
std::string key_digest(std::string_view key);

}  // namespace cache
