package io.nbdtail.nbd.transport;

import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.util.AttributeKey;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.LongAdder;

/**
 * Caps connections in total and per client address. A connection over a cap is closed before the greeting is
 * sent, so it costs no handshake state. Shared by all channels of a server.
 */
@ChannelHandler.Sharable
final class ConnectionLimiter extends ChannelInboundHandlerAdapter {
    private static final AttributeKey<Object> COUNTED = AttributeKey.valueOf("nbdtail.counted");
    private static final Object LOCAL = new Object();

    private final int maxTotal;
    private final int maxPerAddress;
    private final AtomicInteger total = new AtomicInteger();
    private final ConcurrentHashMap<Object, AtomicInteger> perAddress = new ConcurrentHashMap<>();
    private final LongAdder refused = new LongAdder();

    ConnectionLimiter(final int maxTotal, final int maxPerAddress) {
        this.maxTotal = maxTotal;
        this.maxPerAddress = maxPerAddress;
    }

    @Override
    public void channelActive(final ChannelHandlerContext ctx) throws Exception {
        final Object key = key(ctx.channel().remoteAddress());
        // Increment inside the map operation: a separate increment could land on a counter that a concurrent
        // close had just removed, and the per-address count would drift below the truth.
        final int m = perAddress.compute(key, (k, c) -> {
            final AtomicInteger counter = c == null ? new AtomicInteger() : c;
            counter.incrementAndGet();
            return counter;
        }).get();
        final int n = total.incrementAndGet();
        ctx.channel().attr(COUNTED).set(key);
        if (n > maxTotal || m > maxPerAddress) {
            refused.increment();
            ctx.close();
            return;
        }
        super.channelActive(ctx);
    }

    @Override
    public void channelInactive(final ChannelHandlerContext ctx) throws Exception {
        final Object key = ctx.channel().attr(COUNTED).getAndSet(null);
        if (key != null) {
            total.decrementAndGet();
            perAddress.computeIfPresent(key, (k, c) -> c.decrementAndGet() == 0 ? null : c);
        }
        super.channelInactive(ctx);
    }

    int connections() {
        return total.get();
    }

    long refused() {
        return refused.sum();
    }

    private static Object key(final SocketAddress address) {
        if (address instanceof InetSocketAddress inet) {
            final InetAddress ip = inet.getAddress();
            return ip != null ? ip : inet.getHostString();
        }
        return LOCAL;
    }
}
