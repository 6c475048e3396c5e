package io.nbdtail.testing;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.PooledByteBufAllocator;
import io.netty.buffer.UnpooledByteBufAllocator;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Fails a test class that leaked a Netty buffer. Netty reports a leak when a tracked buffer is collected
 * without having been released; this extension forces collection after the class and allocates a few buffers
 * so the detector looks at its queue, then checks {@link LeakCountingDetector}'s count. Registered for every
 * test through JUnit's extension auto-detection ({@code junit-platform.properties}).
 */
public final class LeakCheckExtension implements BeforeAllCallback, AfterAllCallback {
    private int before;

    @Override
    public void beforeAll(final ExtensionContext context) {
        before = LeakCountingDetector.LEAKS.get();
    }

    @Override
    public void afterAll(final ExtensionContext context) throws InterruptedException {
        for (int round = 0; round < 3; round++) {
            System.gc();
            Thread.sleep(50);
            for (int i = 0; i < 64; i++) {
                final ByteBuf a = PooledByteBufAllocator.DEFAULT.directBuffer(16);
                final ByteBuf b = UnpooledByteBufAllocator.DEFAULT.heapBuffer(16);
                a.release();
                b.release();
            }
        }
        final int leaks = LeakCountingDetector.LEAKS.get() - before;
        if (leaks > 0) {
            throw new AssertionError(leaks + " ByteBuf leak(s) reported during " + context.getDisplayName()
                + "; last report: " + LeakCountingDetector.lastReport);
        }
    }
}
