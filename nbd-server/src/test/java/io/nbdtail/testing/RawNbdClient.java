package io.nbdtail.testing;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/**
 * A bare fixed-newstyle NBD client on a blocking socket, for tests that must send what real clients never send
 * (options before STARTTLS, bytes pipelined behind it) and then go on over TLS on the same connection.
 */
public final class RawNbdClient implements AutoCloseable {
    public static final long IHAVEOPT = 0x49484156454F5054L;
    private static final long REPLY_MAGIC = 0x3e889045565a9L;

    private final Socket plain;
    private Socket socket;
    private DataInputStream in;
    private DataOutputStream out;

    /** One option reply: type, and its data. */
    public record Reply(int option, int type, byte[] data) {
        public String text() {
            return new String(data, StandardCharsets.UTF_8);
        }
    }

    /** Connects and reads the greeting; sends fixed newstyle + no zeroes. */
    public RawNbdClient(final String host, final int port) throws IOException {
        plain = new Socket(host, port);
        plain.setSoTimeout(20_000);
        use(plain);
        if (in.readLong() != 0x4e42444d41474943L || in.readLong() != IHAVEOPT) {
            throw new IOException("not an NBD newstyle server");
        }
        in.readUnsignedShort();
        out.writeInt(3);
        out.flush();
    }

    private void use(final Socket s) throws IOException {
        socket = s;
        in = new DataInputStream(s.getInputStream());
        out = new DataOutputStream(s.getOutputStream());
    }

    /** An option request, not flushed when {@code flush} is false (to pipeline two in one segment). */
    public void option(final int option, final byte[] data, final boolean flush) throws IOException {
        out.writeLong(IHAVEOPT);
        out.writeInt(option);
        out.writeInt(data.length);
        out.write(data);
        if (flush) {
            out.flush();
        }
    }

    public void option(final int option, final byte[] data) throws IOException {
        option(option, data, true);
    }

    public Reply reply() throws IOException {
        if (in.readLong() != REPLY_MAGIC) {
            throw new IOException("bad option reply magic");
        }
        final int option = in.readInt();
        final int type = in.readInt();
        final byte[] data = new byte[in.readInt()];
        in.readFully(data);
        return new Reply(option, type, data);
    }

    /** Sends an option and reads replies up to and including the final one (ACK or an error). */
    public Reply request(final int option, final byte[] data) throws IOException {
        option(option, data);
        Reply r;
        do {
            r = reply();
        } while (r.type() == 2 || r.type() == 3 || r.type() == 4); // SERVER, INFO, META_CONTEXT
        return r;
    }

    /** INFO or GO data: name, no information requests. */
    public static byte[] infoData(final String name) {
        final byte[] n = name.getBytes(StandardCharsets.UTF_8);
        return ByteBuffer.allocate(4 + n.length + 2).putInt(n.length).put(n).putShort((short) 0).array();
    }

    /** Sends INFO and returns the transmission flags from its NBD_INFO_EXPORT reply, or -1 with the error. */
    public int infoFlags(final String name) throws IOException {
        option(6, infoData(name));
        int flags = -1;
        while (true) {
            final Reply r = reply();
            if (r.type() == 3 && r.data().length >= 12 && ByteBuffer.wrap(r.data()).getShort() == 0) {
                flags = ByteBuffer.wrap(r.data()).getShort(10) & 0xffff;
            } else if (r.type() != 3) {
                return r.type() == 1 ? flags : -1;
            }
        }
    }

    /** Sends GO for {@code name} and returns the transmission flags; the connection is then in transmission. */
    public int go(final String name) throws IOException {
        option(7, infoData(name));
        int flags = -1;
        while (true) {
            final Reply r = reply();
            if (r.type() == 3 && r.data().length >= 12 && ByteBuffer.wrap(r.data()).getShort() == 0) {
                flags = ByteBuffer.wrap(r.data()).getShort(10) & 0xffff;
            } else if (r.type() != 3) {
                if (r.type() != 1) {
                    throw new IOException("GO " + name + " refused: " + Integer.toHexString(r.type()) + " " + r.text());
                }
                return flags;
            }
        }
    }

    /** A 28-byte transmission request header. */
    public static byte[] request(final int flags, final int type, final long cookie, final long offset,
                                 final int length) {
        return ByteBuffer.allocate(28).putInt(0x25609513).putShort((short) flags).putShort((short) type)
            .putLong(cookie).putLong(offset).putInt(length).array();
    }

    /** Writes raw bytes (requests, payloads) and flushes. */
    public void send(final byte[] bytes) throws IOException {
        out.write(bytes);
        out.flush();
    }

    /** Reads a simple reply header: returns {cookie, error}. */
    public long[] simpleReply() throws IOException {
        if (in.readInt() != 0x67446698) {
            throw new IOException("bad simple reply magic");
        }
        final int error = in.readInt();
        return new long[] {in.readLong(), error};
    }

    public void readFully(final byte[] into) throws IOException {
        in.readFully(into);
    }

    /** The raw output (not flushed per call), for tests that stream requests. */
    public java.io.OutputStream outputStream() {
        return out;
    }

    public void timeout(final int millis) throws IOException {
        socket.setSoTimeout(millis);
    }

    /** Upgrades this connection to TLS (after the server acknowledged STARTTLS). */
    public void startTls(final SSLContext context, final String host) throws IOException {
        final SSLSocket ssl = (SSLSocket) context.getSocketFactory().createSocket(plain, host, plain.getPort(), true);
        ssl.setUseClientMode(true);
        ssl.startHandshake();
        use(ssl);
    }

    /** Whether the server closed the connection (EOF) within the socket timeout, discarding anything it sent. */
    public boolean closedByServer() {
        try {
            while (in.read() >= 0) {
                // skip
            }
            return true;
        } catch (final EOFException e) {
            return true;
        } catch (final IOException e) {
            return e.getMessage() != null && e.getMessage().contains("reset");
        }
    }

    /** Closes with a TCP reset (SO_LINGER 0), as a crashed or killed client would. */
    public void resetNow() throws IOException {
        plain.setSoLinger(true, 0);
        plain.close();
    }

    @Override
    public void close() throws IOException {
        socket.close();
        plain.close();
    }
}
