// The UDP echo service (RFC 862) on the stack's public socket API: what
// `fastdemux serve --udp-echo` runs and what `bench stack-udp-echo`
// measures, one piece of code for both.
import NetStack

/// RFC 862 echo on an ``EndpointStack``, written as any user of the public
/// socket API would write it: one dual-stack IPv6 socket bound to the
/// wildcard address, drained by its readiness handler, each datagram sent
/// back to its sender from the handler (executor form: no blocking, no
/// allocation per datagram).
///
/// Concurrency: `start` from any thread that is not an executor of the
/// stack; close the returned socket (any thread) to stop the service.
package enum StackUDPEcho {
    /// Binds the echo socket to `port` and returns it.
    /// - Throws: the bind's ``UDPSocketError`` (the socket is closed then).
    package static func start(on stack: EndpointStack, port: UInt16) throws(UDPSocketError) -> UDPSocket {
        let s = stack.makeUDPSocket(.ipv6) { s in
            while s.tryReceive({ d in try? s.send(d.payload, to: d.peer) }) != nil {}
        }
        do throws(UDPSocketError) {
            try s.bind(port: port)
        } catch {
            s.close()
            throw error
        }
        return s
    }
}
