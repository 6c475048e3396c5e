package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.storage.FileBlockDevice;
import io.nbdtail.storage.nativeio.NativeIo;
import io.nbdtail.volume.Volume;
import io.nbdtail.volume.VolumeMetadata;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.embedded.EmbeddedChannel;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.UUID;

import static org.assertj.core.api.Assertions.assertThat;

/** Fixtures shared by the engine tests: a volume on a sparse file, and a client end of an EmbeddedChannel. */
final class NbdTestSupport {
    static final long DISK_SIZE = 16L << 20;

    private NbdTestSupport() {
    }

    /** A writable {@link Volume} on a sparse 16 MiB temp file; its flushes run on the calling thread. */
    static Volume openVolume(final Path dir, final String name, final String description) throws IOException {
        final Path file = dir.resolve(name + ".raw");
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.setLength(DISK_SIZE);
        }
        final FileBlockDevice device = FileBlockDevice.open(file, false, NativeIo.get());
        final VolumeMetadata meta = new VolumeMetadata(1, UUID.randomUUID(), name, VolumeMetadata.Kind.FILE,
            DISK_SIZE, null, description, false, Instant.now());
        return new Volume(meta, device, Runnable::run, () -> {
        });
    }

    // ---------------------------------------------------------------- what the client sends

    static byte[] clientFlags(final int flags) {
        return ByteBuffer.allocate(4).putInt(flags).array();
    }

    /** An option request: IHAVEOPT, option, length, data. */
    static byte[] option(final int option, final byte[] data) {
        return ByteBuffer.allocate(NbdConstants.OPTION_HEADER_LENGTH + data.length).putLong(NbdConstants.IHAVEOPT)
            .putInt(option).putInt(data.length).put(data).array();
    }

    static byte[] option(final int option) {
        return option(option, new byte[0]);
    }

    /** INFO / GO data: u32 name length, name, u16 n, n x u16 info request. */
    static byte[] infoData(final String name, final int... infos) {
        final byte[] n = utf8(name);
        final ByteBuffer b = ByteBuffer.allocate(4 + n.length + 2 + 2 * infos.length).putInt(n.length).put(n)
            .putShort((short) infos.length);
        for (final int info : infos) {
            b.putShort((short) info);
        }
        return b.array();
    }

    /** LIST/SET_META_CONTEXT data: u32 name length, name, u32 n, n x (u32 length, query). */
    static byte[] metaContextData(final String name, final String... queries) {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        final byte[] n = utf8(name);
        out.writeBytes(ByteBuffer.allocate(4).putInt(n.length).array());
        out.writeBytes(n);
        out.writeBytes(ByteBuffer.allocate(4).putInt(queries.length).array());
        for (final String q : queries) {
            final byte[] qb = utf8(q);
            out.writeBytes(ByteBuffer.allocate(4).putInt(qb.length).array());
            out.writeBytes(qb);
        }
        return out.toByteArray();
    }

    /** A transmission request header, with the payload appended if given. */
    static byte[] request(final int flags, final int type, final long cookie, final long offset, final long length,
                          final byte[] payload) {
        final int p = payload == null ? 0 : payload.length;
        final ByteBuffer b = ByteBuffer.allocate(NbdConstants.REQUEST_LENGTH + p).putInt(NbdConstants.REQUEST_MAGIC)
            .putShort((short) flags).putShort((short) type).putLong(cookie).putLong(offset).putInt((int) length);
        if (payload != null) {
            b.put(payload);
        }
        return b.array();
    }

    static byte[] request(final int flags, final int type, final long cookie, final long offset, final long length) {
        return request(flags, type, cookie, offset, length, null);
    }

    static byte[] utf8(final String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static byte[] concat(final byte[]... parts) {
        final ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (final byte[] p : parts) {
            out.writeBytes(p);
        }
        return out.toByteArray();
    }

    static byte[] pattern(final int length, final int seed) {
        final byte[] b = new byte[length];
        for (int i = 0; i < length; i++) {
            b[i] = (byte) (i * 13 + seed + (i >>> 8));
        }
        return b;
    }

    // ---------------------------------------------------------------- what the server sends

    /** One option reply: magic already checked. */
    record OptionReply(int option, int type, byte[] data) {
        ByteBuffer body() {
            return ByteBuffer.wrap(data);
        }

        String text() {
            return new String(data, StandardCharsets.UTF_8);
        }

        @Override
        public String toString() {
            return "OptionReply{option=" + option + ", type=0x" + Integer.toHexString(type) + ", data="
                + Arrays.toString(data) + '}';
        }
    }

    /** A simple reply; {@code data} only for a successful READ. */
    record SimpleReply(int error, long cookie, byte[] data) {
    }

    /** A structured reply chunk. */
    record Chunk(int flags, int type, long cookie, byte[] payload) {
        boolean done() {
            return (flags & NbdConstants.REPLY_FLAG_DONE) != 0;
        }

        ByteBuffer body() {
            return ByteBuffer.wrap(payload);
        }
    }

    /**
     * The client end of an {@link EmbeddedChannel}: sends bytes, and reads the server's byte stream however the
     * server happened to split it into buffers. Every outbound buffer is copied and released at once.
     */
    static final class Peer implements AutoCloseable {
        final EmbeddedChannel channel;
        private final ByteArrayOutputStream received = new ByteArrayOutputStream();
        private int position;

        Peer(final EmbeddedChannel channel) {
            this.channel = channel;
        }

        /** Sends all parts as one buffer and runs whatever the server queued on its event loop. */
        void send(final byte[]... parts) {
            final ByteBuf buf = Unpooled.wrappedBuffer(concat(parts));
            channel.writeInbound(buf);
            channel.runPendingTasks();
        }

        /** Bytes received and not yet taken. */
        int available() {
            pull();
            return received.size() - position;
        }

        byte[] take(final int n) {
            pull();
            assertThat(received.size() - position).as("bytes available from the server").isGreaterThanOrEqualTo(n);
            final byte[] all = received.toByteArray();
            final byte[] out = Arrays.copyOfRange(all, position, position + n);
            // keep only what is left, so that long conversations stay linear
            received.reset();
            received.write(all, position + n, all.length - position - n);
            position = 0;
            return out;
        }

        byte[] takeAll() {
            return take(available());
        }

        int takeInt() {
            return ByteBuffer.wrap(take(4)).getInt();
        }

        long takeLong() {
            return ByteBuffer.wrap(take(8)).getLong();
        }

        /** Reads and checks the 18-byte greeting. */
        void greeting() {
            final ByteBuffer g = ByteBuffer.wrap(take(NbdConstants.GREETING_LENGTH));
            assertThat(g.getLong()).isEqualTo(NbdConstants.NBDMAGIC);
            assertThat(g.getLong()).isEqualTo(NbdConstants.IHAVEOPT);
            assertThat(g.getShort()).isEqualTo((short) 3);
        }

        OptionReply optionReply() {
            final ByteBuffer h = ByteBuffer.wrap(take(NbdConstants.OPTION_REPLY_HEADER_LENGTH));
            assertThat(h.getLong()).as("option reply magic").isEqualTo(NbdConstants.OPTION_REPLY_MAGIC);
            final int option = h.getInt();
            final int type = h.getInt();
            final int length = h.getInt();
            return new OptionReply(option, type, take(length));
        }

        /** All option replies available now. */
        List<OptionReply> optionReplies() {
            final List<OptionReply> replies = new ArrayList<>();
            while (available() > 0) {
                replies.add(optionReply());
            }
            return replies;
        }

        SimpleReply simpleReply(final int readLength) {
            assertThat(takeInt()).as("simple reply magic").isEqualTo(NbdConstants.SIMPLE_REPLY_MAGIC);
            final int error = takeInt();
            final long cookie = takeLong();
            return new SimpleReply(error, cookie, error == 0 && readLength > 0 ? take(readLength) : new byte[0]);
        }

        Chunk chunk() {
            assertThat(takeInt()).as("structured reply magic").isEqualTo(NbdConstants.STRUCTURED_REPLY_MAGIC);
            final ByteBuffer h = ByteBuffer.wrap(take(NbdConstants.CHUNK_HEADER_LENGTH - 4));
            final int flags = h.getShort() & 0xffff;
            final int type = h.getShort() & 0xffff;
            final long cookie = h.getLong();
            final int length = h.getInt();
            return new Chunk(flags, type, cookie, take(length));
        }

        private void pull() {
            channel.runPendingTasks();
            Object msg;
            while ((msg = channel.readOutbound()) != null) {
                final ByteBuf buf = (ByteBuf) msg;
                try {
                    buf.getBytes(buf.readerIndex(), received, buf.readableBytes());
                } catch (final IOException e) {
                    throw new AssertionError(e);
                } finally {
                    buf.release();
                }
            }
        }

        @Override
        public void close() {
            channel.finishAndReleaseAll();
        }
    }
}
