package io.nbdtail.testing;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A TCP relay between a client and a server that a test can break: {@link #cut()} resets every connection (a
 * crashed peer or a broken link), {@link #blackhole(boolean)} stops forwarding bytes while connections stay
 * open (a partition: only timeouts notice), {@link #refuse(boolean)} turns new connections away.
 */
public final class FaultyRelay implements AutoCloseable {
    private final ServerSocket listener;
    private final InetSocketAddress target;
    private final List<Socket> sockets = new CopyOnWriteArrayList<>();
    private final AtomicLong forwarded = new AtomicLong();
    private volatile boolean blackhole;
    private volatile boolean refuse;
    private volatile boolean closed;

    public FaultyRelay(final InetSocketAddress target) throws IOException {
        this.target = target;
        this.listener = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
        Thread.ofVirtual().name("relay-accept").start(this::accept);
    }

    public int port() {
        return listener.getLocalPort();
    }

    /** Bytes forwarded in both directions so far. */
    public long forwarded() {
        return forwarded.get();
    }

    public void blackhole(final boolean on) {
        blackhole = on;
    }

    public void refuse(final boolean on) {
        refuse = on;
    }

    /** Resets every open connection (SO_LINGER 0: the peers see a reset, not a clean close). */
    public void cut() {
        for (final Socket s : sockets) {
            try {
                s.setSoLinger(true, 0);
                s.close();
            } catch (final IOException ignored) {
                // already gone
            }
        }
        sockets.clear();
    }

    private void accept() {
        while (!closed) {
            try {
                final Socket client = listener.accept();
                if (refuse) {
                    client.setSoLinger(true, 0);
                    client.close();
                    continue;
                }
                final Socket server = new Socket();
                server.connect(target, 2_000);
                sockets.add(client);
                sockets.add(server);
                Thread.ofVirtual().start(() -> pump(client, server));
                Thread.ofVirtual().start(() -> pump(server, client));
            } catch (final IOException e) {
                if (closed) {
                    return;
                }
            }
        }
    }

    private void pump(final Socket from, final Socket to) {
        final byte[] buffer = new byte[64 << 10];
        try (InputStream in = from.getInputStream(); OutputStream out = to.getOutputStream()) {
            int n;
            while ((n = in.read(buffer)) >= 0) {
                while (blackhole && !from.isClosed()) {
                    Thread.sleep(10);
                }
                out.write(buffer, 0, n);
                forwarded.addAndGet(n);
            }
        } catch (final IOException | InterruptedException ignored) {
            // one side went away; close both
        } finally {
            try {
                from.close();
                to.close();
            } catch (final IOException ignored) {
                // nothing left to do
            }
        }
    }

    @Override
    public void close() throws IOException {
        closed = true;
        listener.close();
        cut();
    }
}
