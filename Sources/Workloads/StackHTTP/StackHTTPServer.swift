import NetStack

/// The HTTP/1.1 service (``HTTPService``: `GET /`, `GET /bytes/N`,
/// keep-alive, pipelining) on an ``EndpointStack``, written as a user of
/// the public socket API would write it, in the executor form: a
/// dual-stack IPv6 listener on the wildcard address; each connection
/// keeps an ``HTTPConnection`` in its ``TCPSocket/context`` and its
/// readiness handler runs it. What `fastdemux serve --http` runs and what
/// `bench stack-http` measures.
///
/// Concurrency: `start` from any thread that is not an executor of the
/// stack; close the returned listener (any thread) to stop accepting. The
/// handler runs on each connection's core; per connection it allocates
/// the ``HTTPConnection`` once, per request nothing.
package enum StackHTTPServer {
    /// Listens on `port` and returns the listener.
    /// - Throws: the listen's `SocketError` (`addressInUse`).
    package static func start(on stack: EndpointStack, port: UInt16, backlog: Int = 1024,
                              configuration: TCPConfiguration = TCPConfiguration()) throws(SocketError)
        -> TCPListenerSocket
    {
        try stack.makeTCPListener(.ipv6, port: port, configuration: configuration, backlog: backlog) { s in
            serve(s)
        }
    }

    /// One run of a connection's handler.
    package static func serve(_ s: TCPSocket) {
        switch s.state {
        case .closed, .synSent, .synReceived: return   // the socket releases the context when it finishes
        default: break
        }
        let connection: HTTPConnection
        if let c = s.context {
            connection = unsafeDowncast(c, to: HTTPConnection.self)
        } else {
            connection = HTTPConnection()
            s.context = connection
        }
        var io = StackSocketIO(socket: s)
        if connection.run(&io) == .shutdownWrite { s.shutdownWrite() }
    }
}

/// A stack TCP socket as an ``HTTPConnectionIO`` (on its executor).
private struct StackSocketIO: HTTPConnectionIO {
    let socket: TCPSocket

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        let n = socket.read(into: buffer)
        return n == 0 && (socket.atEndOfFile || socket.state == .closed) ? nil : n
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Int { socket.write(bytes) }
}
