// The wire format between lmfast and its template worker process (template_worker.cpp), over
// one Unix stream socket. Both ends are built from the same source and run on the same machine,
// so integers go in host byte order.
//
// Worker -> lmfast, "frames": 1 status byte, a uint64 length, that many bytes.
//   'R'  ready: the model's vocabulary is loaded, the untrusted part (the template) starts now
//   'O'  ok: the template source (answer to the start) or the rendered prompt
//   'E'  the template raised or could not be parsed; the payload is the message
//   'M'  the template ran out of the memory allowed
// lmfast -> worker, "requests", one of:
//   plain: 1 byte add_generation_prompt (0/1), a uint32 message count, then for each message a
//          uint32 length + role bytes and a uint32 length + content bytes; answered with the
//          rendered prompt.
//   JSON:  1 byte kJsonRequest, a uint32 length + a request of chat_render.h's render_chat_json
//          (messages with tool calls, tool definitions); answered with its JSON answer.
//   JSON with another template: 1 byte kTemplateJsonRequest, then uint32 length + bytes of the
//          template's source, its BOS text and its EOS text (either may be empty: the model's),
//          then the JSON request as above. The worker parses the template (keeping the parsed
//          form for the next request with the same three strings) and renders with it instead
//          of the model's; a template that fails to parse is answered with 'E'.
// The worker answers the start with 'R' then 'O'/'E'/'M', and each request with one frame; it
// exits when the socket is closed.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include <sys/socket.h>
#include <sys/types.h>

namespace lmfast::template_protocol {

#ifdef MSG_NOSIGNAL
constexpr int kSendFlags = MSG_NOSIGNAL;  // a closed peer gives EPIPE, not SIGPIPE
#else
constexpr int kSendFlags = 0;  // macOS: SO_NOSIGPIPE is set on the socket instead
#endif

constexpr char kJsonRequest = 'J';
constexpr char kTemplateJsonRequest = 'T';

inline void put_u32(std::string & out, uint32_t v) { out.append(reinterpret_cast<const char *>(&v), sizeof v); }
inline void put_u64(std::string & out, uint64_t v) { out.append(reinterpret_cast<const char *>(&v), sizeof v); }

inline void put_bytes(std::string & out, const std::string & s) {
    put_u32(out, static_cast<uint32_t>(s.size()));
    out.append(s);
}

inline std::string frame(char status, const std::string & payload) {
    std::string out(1, status);
    put_u64(out, payload.size());
    out.append(payload);
    return out;
}

// Blocking send of all bytes; false when the peer is gone.
inline bool send_all(int fd, const char * p, size_t n) {
    while (n > 0) {
        const ssize_t w = ::send(fd, p, n, kSendFlags);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

// Blocking receive of exactly n bytes; false on end of stream or error.
inline bool recv_all(int fd, char * p, size_t n) {
    while (n > 0) {
        const ssize_t r = ::recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

}  // namespace lmfast::template_protocol
