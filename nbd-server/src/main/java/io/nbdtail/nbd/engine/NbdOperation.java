package io.nbdtail.nbd.engine;

import io.nbdtail.nbd.codec.NbdReplies;
import io.nbdtail.nbd.protocol.NbdCommand;
import io.nbdtail.nbd.protocol.NbdConstants;
import io.nbdtail.nbd.protocol.NbdError;
import io.nbdtail.nbd.protocol.NbdRequest;
import io.nbdtail.storage.ExtentSink;
import io.nbdtail.storage.FlushWaiter;
import io.nbdtail.storage.StorageException;
import io.nbdtail.volume.Volume;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.CompositeByteBuf;
import io.netty.buffer.ByteBufAllocator;
import io.netty.util.Recycler;

import java.nio.ByteBuffer;

/**
 * One request on its way through the server. It runs twice: first on a storage thread, where it does the disc
 * I/O and builds its whole reply into one buffer; then on the connection's event loop, where the handler
 * writes that buffer. Being its own {@link Runnable} (and {@link FlushWaiter}) avoids a lambda per hop.
 *
 * <p>Ownership: the WRITE payload belongs to the operation until it completes, and is released on the event loop
 * that allocated it. A READ's reply buffer is allocated on the event loop at dispatch ({@link #prepare}), filled
 * on the storage thread, and written (then released by Netty) on the event loop. Netty's object pools and the
 * pooled allocator's thread caches are per thread: a buffer allocated on one thread and released on another
 * goes back through a cross-thread queue that allocates, so every buffer of the READ and WRITE paths is
 * allocated and released on the same thread.
 *
 * <p>Operations and their requests are pooled: taken and returned on the connection's event loop (by
 * {@link NbdTransmissionHandler}), so the steady-state READ and WRITE paths allocate nothing on the heap.
 */
final class NbdOperation implements Runnable, FlushWaiter {
    private static final Recycler<NbdOperation> RECYCLER = new Recycler<>() {
        @Override
        protected NbdOperation newObject(final Handle<NbdOperation> handle) {
            return new NbdOperation(handle);
        }
    };
    /** Extent scratch space of each storage thread: reads and block status need it only during the I/O. */
    private static final ThreadLocal<Extents> EXTENTS = new ThreadLocal<>();

    private final Recycler.Handle<NbdOperation> handle;
    private NbdTransmissionHandler handler;
    private NbdRequest request;
    private NbdCommand command;
    /** Bytes this request holds or will hold while in flight; counted against the connection's budget. */
    long weight;
    /** When the request was decoded, for the latency histogram. */
    long startNanos;

    private boolean ioDone;
    private ByteBuf reply;
    private NbdError error;
    private String errorMessage;

    private NbdOperation(final Recycler.Handle<NbdOperation> handle) {
        this.handle = handle;
    }

    static NbdOperation newInstance(final NbdTransmissionHandler handler, final NbdRequest request,
                                    final NbdCommand command) {
        final NbdOperation op = RECYCLER.get();
        op.handler = handler;
        op.request = request;
        op.command = command;
        op.weight = command == NbdCommand.READ || command == NbdCommand.WRITE ? request.length() : 0;
        op.startNanos = System.nanoTime();
        op.ioDone = false;
        op.reply = null;
        op.error = null;
        op.errorMessage = null;
        return op;
    }

    /**
     * Allocates what the storage thread will fill; call on the event loop just before dispatch. A READ gets a
     * buffer for its whole reply in the common case, one data chunk (or a simple reply); a reply with hole
     * chunks may grow it on the storage thread, up to its maximum capacity.
     */
    void prepare(final ByteBufAllocator alloc, final boolean structured, final int maxReadChunks) {
        if (command != NbdCommand.READ) {
            return;
        }
        final int length = (int) request.length();
        if (!structured) {
            final int size = NbdConstants.SIMPLE_REPLY_LENGTH + length;
            reply = alloc.directBuffer(size, size);
        } else if (length == 0) {
            reply = alloc.directBuffer(NbdConstants.CHUNK_HEADER_LENGTH, NbdConstants.CHUNK_HEADER_LENGTH);
        } else {
            final int chunks = request.hasFlag(NbdConstants.CMD_FLAG_DF) ? 1 : maxReadChunks;
            // A hole chunk is READ_HEADROOM + 4 bytes, even for a hole shorter than 4 bytes.
            reply = alloc.directBuffer(NbdReplies.READ_HEADROOM + length,
                (int) Math.min(Integer.MAX_VALUE, (long) chunks * (NbdReplies.READ_HEADROOM + 4) + length));
        }
    }

    /** Returns the request and this operation to their pools; call on the event loop, once, at the very end. */
    void recycle() {
        final NbdRequest r = request;
        request = null;
        handler = null;
        r.recycle();
        handle.recycle(this);
    }

    NbdRequest request() {
        return request;
    }

    NbdCommand command() {
        return command;
    }

    NbdError error() {
        return error;
    }

    String errorMessage() {
        return errorMessage;
    }

    /** The reply built on the storage thread, handed over to the caller; {@code null} if none was built. */
    ByteBuf takeReply() {
        final ByteBuf r = reply;
        reply = null;
        return r;
    }

    /** Releases the reply buffer of a failed operation; call on the event loop. */
    void releaseReply() {
        final ByteBuf r = reply;
        reply = null;
        if (r != null) {
            r.release();
        }
    }

    /** Releases whatever the operation still holds and recycles it; for a connection that closed first. */
    void discard() {
        final ByteBuf r = reply;
        reply = null;
        if (r != null) {
            r.release();
        }
        recycle();
    }

    @Override
    public void run() {
        if (ioDone) {
            handler.complete(this);
            return;
        }
        ioDone = true;
        if (execute()) {
            toEventLoop();
        }
    }

    @Override
    public void onFlushed(final StorageException failure) {
        if (failure != null) {
            // Whatever made the sync fail (even ENOSPC), the data it covered is in doubt: always EIO.
            error = NbdError.EIO;
            errorMessage = failure.getMessage();
        }
        toEventLoop();
    }

    /** Hands the completion to the connection's event loop; if the loop has stopped, drops what is held. */
    private void toEventLoop() {
        try {
            handler.eventLoop().execute(this);
        } catch (final java.util.concurrent.RejectedExecutionException stopped) {
            // The loop is gone and nothing will complete this operation: free its buffers here.
            final ByteBuf r = reply;
            reply = null;
            if (r != null) {
                r.release();
            }
            request.release();
        }
    }

    /**
     * Does the I/O on a storage thread.
     *
     * @return {@code true} if the operation is complete, {@code false} if it waits for a flush (which will
     *         schedule the completion itself).
     */
    private boolean execute() {
        final Volume volume = handler.volume();
        final long offset = request.offset();
        final long length = request.length();
        final boolean fua = request.hasFlag(NbdConstants.CMD_FLAG_FUA);
        boolean waitForSync = false;
        try {
            switch (command) {
                case READ -> read(volume, reply, offset, (int) length);
                case WRITE -> {
                    write(volume, offset);
                    waitForSync = fua;
                }
                case TRIM -> {
                    volume.discard(offset, length);
                    waitForSync = fua;
                }
                case WRITE_ZEROES -> {
                    volume.writeZeroes(offset, length, !request.hasFlag(NbdConstants.CMD_FLAG_NO_HOLE),
                        request.hasFlag(NbdConstants.CMD_FLAG_FAST_ZERO));
                    waitForSync = fua;
                }
                case FLUSH -> waitForSync = true;
                case CACHE -> volume.prefetch(offset, length);
                case BLOCK_STATUS -> reply = blockStatus(volume, offset, length);
                default -> throw new IllegalStateException("not dispatchable: " + command);
            }
        } catch (final StorageException e) {
            fail(e);
            waitForSync = false;
        } catch (final RuntimeException e) {
            fail(new StorageException(StorageException.Kind.IO_ERROR, command + " failed: " + e, e));
            waitForSync = false;
        }
        // The payload stays with the request and is released on the event loop when the operation completes.
        // Once the flush below is queued, another thread may complete and recycle this operation at any moment,
        // so nothing may touch it after that call.
        if (waitForSync) {
            volume.flush(this);
            return false;
        }
        return true;
    }

    private void fail(final StorageException e) {
        error = switch (e.kind()) {
            case NO_SPACE -> NbdError.ENOSPC;
            case NOT_SUPPORTED -> NbdError.ENOTSUP;
            case IO_ERROR, VOLUME_FAILED -> NbdError.EIO;
        };
        errorMessage = e.getMessage();
        // The reply buffer, if any, is released on the event loop that allocated it (releaseReply).
    }

    private void write(final Volume volume, final long offset) throws StorageException {
        final ByteBuf payload = request.payload();
        if (payload == null) {
            if (request.length() != 0) {
                throw new IllegalStateException("WRITE of " + request.length() + " bytes has no payload");
            }
            return;
        }
        if (payload.hasMemoryAddress()) {
            volume.write(payload.memoryAddress() + payload.readerIndex(), payload.readableBytes(), offset);
            return;
        }
        if (payload.nioBufferCount() == 1) {
            volume.write(payload.nioBuffer(), offset);
            return;
        }
        long position = offset;
        for (final ByteBuffer part : payload.nioBuffers()) {
            final int n = part.remaining();
            volume.write(part, position);
            position += n;
        }
    }

    /**
     * Builds the whole READ reply into {@code buf} (from {@link #prepare}). Without structured replies: a simple
     * reply header followed by the data. With them: OFFSET_DATA and OFFSET_HOLE chunks that follow the volume's
     * allocation (up to {@code maxReadChunks}; the rest goes as data), or a single OFFSET_DATA chunk when DF is
     * set.
     */
    private void read(final Volume volume, final ByteBuf buf, final long offset, final int length)
        throws StorageException {
        final long cookie = request.cookie();
        if (!handler.session().structuredReplies()) {
            NbdReplies.writeSimpleHeader(buf, cookie, 0);
            readInto(volume, buf, offset, length);
            return;
        }
        if (length == 0) {
            NbdReplies.writeChunkHeader(buf, NbdConstants.REPLY_FLAG_DONE, NbdConstants.REPLY_TYPE_NONE, cookie, 0);
            return;
        }
        final Extents extents = extents(request.hasFlag(NbdConstants.CMD_FLAG_DF) ? 1 : handler.config().maxReadChunks);
        if (extents.capacity() > 1) {
            volume.allocation(offset, length, extents, extents.capacity());
        }
        extents.coverRest(length);
        int size = 0;
        for (int i = 0; i < extents.count; i++) {
            size += NbdReplies.READ_HEADROOM + (extents.isHole(i) ? 4 : (int) extents.lengths[i]);
        }
        // Only a reply with hole chunks can outgrow the one-chunk buffer prepared on the event loop.
        buf.ensureWritable(size);
        long position = offset;
        for (int i = 0; i < extents.count; i++) {
            final int n = (int) extents.lengths[i];
            final boolean last = i == extents.count - 1;
            if (extents.isHole(i)) {
                NbdReplies.writeHole(buf, last, cookie, position, n);
            } else {
                NbdReplies.writeChunkHeader(buf, last ? NbdConstants.REPLY_FLAG_DONE : 0,
                    NbdConstants.REPLY_TYPE_OFFSET_DATA, cookie, 8 + n);
                buf.writeLong(position);
                readInto(volume, buf, position, n);
            }
            position += n;
        }
    }

    private static void readInto(final Volume volume, final ByteBuf buf, final long offset, final int length)
        throws StorageException {
        buf.ensureWritable(length);
        final int at = buf.writerIndex();
        if (buf.hasMemoryAddress()) {
            volume.read(buf.memoryAddress() + at, length, offset);
        } else {
            volume.read(buf.nioBuffer(at, length), offset);
        }
        buf.writerIndex(at + length);
    }

    /** This storage thread's extent scratch space, emptied, with room for {@code limit} extents. */
    private static Extents extents(final int limit) {
        Extents e = EXTENTS.get();
        if (e == null || e.lengths.length < limit) {
            e = new Extents(limit);
            EXTENTS.set(e);
        }
        e.reset(limit);
        return e;
    }

    /** One BLOCK_STATUS chunk per selected metadata context, the last one flagged DONE. */
    private ByteBuf blockStatus(final Volume volume, final long offset, final long length) throws StorageException {
        final int max = request.hasFlag(NbdConstants.CMD_FLAG_REQ_ONE) ? 1 : handler.config().maxBlockStatusExtents;
        final java.util.List<MetaContext> contexts = handler.session().contexts();
        final CompositeByteBuf reply = handler.alloc().compositeBuffer(contexts.size());
        try {
            for (int c = 0; c < contexts.size(); c++) {
                final MetaContext context = contexts.get(c);
                final Extents extents = extents(max);
                switch (context.kind()) {
                    case BASE_ALLOCATION -> volume.allocation(offset, length, extents, max);
                    case ALLOCATION_DEPTH -> volume.depth(offset, length, extents, max);
                    case DIRTY_BITMAP -> {
                        if (volume.dirty(context.snapshot(), offset, length, extents, max) < 0) {
                            // The snapshot went after the client selected its bitmap: say "changed", which makes
                            // a backup copy too much, never too little.
                            extents.reset(max);
                            extents.extent(length, 1);
                        }
                    }
                }
                if (extents.count == 0) {
                    throw new StorageException(StorageException.Kind.IO_ERROR, "no " + context.name()
                        + " information at offset " + offset);
                }
                final int payload = 4 + 8 * extents.count;
                final ByteBuf buf = handler.alloc().ioBuffer(NbdConstants.CHUNK_HEADER_LENGTH + payload);
                NbdReplies.writeChunkHeader(buf, c == contexts.size() - 1 ? NbdConstants.REPLY_FLAG_DONE : 0,
                    NbdConstants.REPLY_TYPE_BLOCK_STATUS, request.cookie(), payload);
                buf.writeInt(context.id());
                for (int i = 0; i < extents.count; i++) {
                    buf.writeInt((int) extents.lengths[i]);
                    buf.writeInt(extents.flags[i]);
                }
                reply.addComponent(true, buf);
            }
            return reply;
        } catch (final StorageException | RuntimeException e) {
            reply.release();
            throw e;
        }
    }

    /** Collects extents, merging neighbours with equal flags. Reused by one storage thread. */
    private static final class Extents implements ExtentSink {
        final long[] lengths;
        final int[] flags;
        int limit;
        int count;
        long covered;

        Extents(final int capacity) {
            lengths = new long[capacity];
            flags = new int[capacity];
            limit = capacity;
        }

        void reset(final int newLimit) {
            limit = newLimit;
            count = 0;
            covered = 0;
        }

        int capacity() {
            return limit;
        }

        boolean isHole(final int i) {
            return (flags[i] & ExtentSink.ZERO) != 0;
        }

        @Override
        public void extent(final long length, final int f) {
            covered += length;
            if (count > 0 && flags[count - 1] == f) {
                lengths[count - 1] += length;
                return;
            }
            if (count == limit) {
                return;
            }
            lengths[count] = length;
            flags[count] = f;
            count++;
        }

        /** Makes the extents cover {@code total} bytes: whatever allocation did not describe is read as data. */
        void coverRest(final long total) {
            long sum = 0;
            for (int i = 0; i < count; i++) {
                sum += lengths[i];
            }
            if (sum >= total) {
                return;
            }
            if (count > 0 && flags[count - 1] == 0) {
                lengths[count - 1] += total - sum;
            } else if (count < limit) {
                lengths[count] = total - sum;
                flags[count] = 0;
                count++;
            } else {
                // Full: turn the last extent into data and let it run to the end.
                flags[count - 1] = 0;
                lengths[count - 1] += total - sum;
            }
        }
    }
}
