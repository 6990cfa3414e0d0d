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

/// TCP echo (RFC 862, the TCP service) on an ``EndpointStack``, written
/// as a user of the public socket API would write it: a dual-stack IPv6
/// listener on the wildcard address; each connection's readiness handler
/// moves what it can from the receive side to the send side, bounded by
/// ``TCPSocket/writableBytes`` (backpressure: what does not fit stays in
/// the receive buffer, whose window then closes), and half-closes once
/// the peer finished and everything was echoed. What `fastdemux serve
/// --tcp-echo` runs.
///
/// Concurrency: `start` from any thread that is not an executor of the
/// stack; close the returned listener (any thread) to stop accepting.
/// The handler runs on each connection's core; it allocates nothing (a
/// 16 KiB stack buffer per run).
package enum StackTCPEcho {
    /// Listens on `port` and returns the listener.
    /// - Throws: the listen's `SocketError` (`addressInUse`).
    package static func start(on stack: EndpointStack, port: UInt16,
                              configuration: TCPConfiguration = TCPConfiguration()) throws(SocketError)
        -> TCPListenerSocket
    {
        try stack.makeTCPListener(.ipv6, port: port, configuration: configuration) { s in echo(s) }
    }

    /// One run of a connection's handler: echo what fits, FIN at the end.
    package static func echo(_ s: TCPSocket) {
        withUnsafeTemporaryAllocation(byteCount: 16 * 1024, alignment: 16) { buffer in
            while true {
                let n = min(s.readableBytes, s.writableBytes, buffer.count)
                guard n > 0 else { break }
                let got = s.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
                _ = s.write(UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
            }
        }
        if s.atEndOfFile && s.state == .closeWait { s.shutdownWrite() }
    }
}
